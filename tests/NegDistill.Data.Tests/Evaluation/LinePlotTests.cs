using System.Buffers.Binary;
using NegDistill.Data.Evaluation;
using SkiaSharp;

namespace NegDistill.Data.Tests.Evaluation;

/// <summary>The PNG charts: a real PNG of the requested size, with the lines drawn.</summary>
public class LinePlotTests
{
    private static readonly byte[] PngSignature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>Checks signature and IHDR, returns (width, height).</summary>
    private static (int Width, int Height) PngSize(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        Assert.That(bytes.Length, Is.GreaterThan(33));
        Assert.That(bytes.AsSpan(0, 8).ToArray(), Is.EqualTo(PngSignature));
        Assert.That(System.Text.Encoding.ASCII.GetString(bytes, 12, 4), Is.EqualTo("IHDR"));
        return (BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16)), BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20)));
    }

    /// <summary>Pixels that are clearly coloured (not white, black or grey): the plotted lines and markers.</summary>
    private static int ColouredPixels(string path)
    {
        using SKBitmap bitmap = SKBitmap.Decode(path);
        Assert.That(bitmap, Is.Not.Null, "the PNG decodes");
        int count = 0;
        for (int y = 0; y < bitmap.Height; y++)
        {
            for (int x = 0; x < bitmap.Width; x++)
            {
                SKColor c = bitmap.GetPixel(x, y);
                int max = Math.Max(c.Red, Math.Max(c.Green, c.Blue));
                int min = Math.Min(c.Red, Math.Min(c.Green, c.Blue));
                if (max - min > 60)
                {
                    count++;
                }
            }
        }

        return count;
    }

    [Test]
    public void Line_plot_writes_a_png_of_the_requested_size()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "plots", "loss.png");
        double[] steps = Enumerable.Range(0, 50).Select(i => (double)i).ToArray();
        LinePlot.Save(path, "training loss", "step", "loss",
            [
                new PlotSeries("train", steps, steps.Select(s => 3.0 * Math.Exp(-s / 20) + 0.5).ToArray()),
                new PlotSeries("eval", steps, steps.Select(s => s == 10 ? double.NaN : 3.2 * Math.Exp(-s / 25) + 0.6).ToArray()),
            ],
            new PlotOptions(640, 360, Markers: false));

        Assert.That(new FileInfo(path).Length, Is.GreaterThan(1000));
        Assert.That(PngSize(path), Is.EqualTo((640, 360)));
        Assert.That(ColouredPixels(path), Is.GreaterThan(500));
    }

    [Test]
    public void An_empty_plot_has_no_coloured_lines()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "empty.png");
        LinePlot.Save(path, "alpha per layer", "layer", "alpha");
        Assert.That(PngSize(path), Is.EqualTo((800, 500)));
        Assert.That(ColouredPixels(path), Is.LessThan(50));
    }

    [Test]
    public void Mismatched_series_lengths_are_rejected()
    {
        using var dir = new TempDir();
        Assert.Throws<ArgumentException>(() =>
            LinePlot.Save(Path.Combine(dir.Path, "x.png"), "t", "x", "y", new PlotSeries("a", [1, 2], [1])));
    }

    [Test]
    public void Accuracy_against_N_plot()
    {
        EvalQuestion[] questions = [new("q1", "algebra", "2"), new("q2", "geometry", "3")];
        var rng = new Random(7);
        var samples = new List<Candidate>();
        foreach (EvalQuestion q in questions)
        {
            for (int i = 0; i < 16; i++)
            {
                string answer = rng.Next(3) == 0 ? q.ReferenceAnswer! : rng.Next(4).ToString(System.Globalization.CultureInfo.InvariantCulture);
                samples.Add(Candidate.FromText(AnswerTask.Math, q.QuestionId, q.Subject, i, "\\boxed{" + answer + "}", q.ReferenceAnswer,
                    -rng.NextDouble() * 20, rng.Next(5, 50), rng.NextDouble()));
            }
        }

        EvaluationReport report = Evaluator.Evaluate(AnswerTask.Math, questions, samples);
        Assert.That(report.Ns, Is.EqualTo(new[] { 1, 2, 4, 8, 16 }));

        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "acc_vs_n.png");
        LinePlot.SaveAccuracyVsN(path, report, width: 720, height: 480);
        Assert.That(PngSize(path), Is.EqualTo((720, 480)));
        Assert.That(ColouredPixels(path), Is.GreaterThan(500));
    }
}
