using NegDistill.Data;

namespace NegDistill.Data.Tests;

public class SplitReportTests
{
    [Test]
    public void Renders_totals_subjects_levels_questions_and_throughput()
    {
        using var dir = new TempDir();
        dir.File("gpt4/train_algebra_8/0.jsonl",
            Json.Teacher("Q1", "\\boxed{1}", ["\\boxed{1}", "\\boxed{2}", "\\boxed{1}"], "Level 1", "Algebra") + "\n" +
            "broken line\n");
        dir.File("gpt4/train_geometry_8/0.jsonl",
            Json.Teacher("Q2", "\\boxed{\\pi}", ["\\boxed{\\pi}", new string('x', 1500) + "\\boxed{3}"], "Level 5", "Geometry") + "\n");

        string text = SplitReport.RenderPath(Path.Combine(dir.Path, "gpt4"));
        TestContext.Out.WriteLine(text);

        string[] lines = text.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        string Row(string name) => lines.Single(l => l.StartsWith(name + " ", StringComparison.Ordinal));
        string[] Cells(string name) => Row(name).Split(' ', StringSplitOptions.RemoveEmptyEntries);

        Assert.That(lines.Any(l => l.Contains("rationales") && l.Contains("positives") && l.Contains("negatives") && l.Contains("dropped") && l.Contains("malformed")), Is.True);
        Assert.That(Cells("all"), Is.EqualTo(new[] { "all", "5", "3", "1", "1", "0", "1", "0" }));
        Assert.That(Cells("algebra"), Is.EqualTo(new[] { "algebra", "3", "2", "1", "0", "0", "0", "0" }));
        Assert.That(Cells("geometry"), Is.EqualTo(new[] { "geometry", "2", "1", "0", "1", "0", "1", "0" }));
        Assert.That(Row("Level 5"), Does.Contain("2"));
        Assert.That(text, Does.Contain("records (questions)"));
        Assert.That(text, Does.Contain("malformed records skipped               1"));
        Assert.That(text, Does.Contain(":2: invalid JSON"));
        Assert.That(text, Does.Contain("invariant positives + negatives + dropped + malformed = rationales: holds"));
        Assert.That(text, Does.Match(@"throughput: 5 rationales in [0-9.]+ s = [0-9,]+ rationales/s"));
    }
}
