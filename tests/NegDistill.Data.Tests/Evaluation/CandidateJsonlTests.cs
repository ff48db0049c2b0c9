using System.Text;
using NegDistill.Data.Evaluation;

namespace NegDistill.Data.Tests.Evaluation;

/// <summary>The candidate JSONL file: round trip, per-line flushing, truncated last line, resume.</summary>
public class CandidateJsonlTests
{
    private static Candidate Make(int index, string question = "math/test/algebra/17.json") => new(
        question,
        "algebra",
        index,
        $"Solution {index}:\nWe have \"x\" = 1/2, a tab\there, unicode é → ∞ 🙂, backslash \\frac{{1}}{{2}}.\n\\boxed{{\\frac{{1}}{{2}}}}",
        index % 3 == 2 ? null : "\\frac{1}{2}",
        index % 2 == 0,
        -12.345678901234567 * (index + 1),
        37 + index,
        index % 2 == 0 ? 0.1 * index : null);

    [Test]
    public void Candidates_round_trip_exactly()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "sub", "candidates.jsonl");
        Candidate[] written =
        [
            Make(0), Make(1), Make(2),
            Make(3) with { LogProb = double.NegativeInfinity, Answer = "" },
            Make(4) with { RankScore = 1.0 / 3.0, LogProb = -1e-300 },
        ];
        using (CandidateJsonlWriter w = CandidateJsonlWriter.Open(path))
        {
            foreach (Candidate c in written)
            {
                w.Append(c);
            }

            Assert.That(w.Written, Is.EqualTo(5));
            Assert.That(w.DroppedPartialBytes, Is.EqualTo(0));
        }

        var report = new CandidateReadReport();
        List<Candidate> read = CandidateJsonl.ReadAll(path, report);
        Assert.That(read, Is.EqualTo(written));
        Assert.That(report.Candidates, Is.EqualTo(5));
        Assert.That(report.TruncatedLine, Is.Null);

        string[] lines = File.ReadAllText(path).Split('\n');
        Assert.That(lines, Has.Length.EqualTo(6));
        Assert.That(lines[^1], Is.Empty);
        Assert.That(lines[0], Does.StartWith("{\"question_id\":\"math/test/algebra/17.json\",\"subject\":\"algebra\",\"index\":0,"));
        Assert.That(lines[2], Does.Contain("\"answer\":null"));
        Assert.That(lines[3], Does.Contain("\"log_prob\":\"-Infinity\""));
    }

    [Test]
    public void Each_line_is_on_disk_as_soon_as_it_is_appended()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "c.jsonl");
        using CandidateJsonlWriter w = CandidateJsonlWriter.Open(path);
        w.Append(Make(0));
        w.Append(Make(1));

        // Read while the writer is still open.
        Assert.That(CandidateJsonl.ReadAll(path), Is.EqualTo(new[] { Make(0), Make(1) }));
    }

    [Test]
    public void A_truncated_last_line_is_dropped_reported_and_repaired_on_resume()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "c.jsonl");
        using (CandidateJsonlWriter w = CandidateJsonlWriter.Open(path))
        {
            w.Append(Make(0));
            w.Append(Make(1));
            w.Append(Make(2));
        }

        // The run dies halfway through writing candidate 3.
        byte[] fourth = CandidateJsonl.Serialize(Make(3));
        int half = fourth.Length / 2;
        using (var f = new FileStream(path, FileMode.Append))
        {
            f.Write(fourth, 0, half);
        }

        var report = new CandidateReadReport();
        List<Candidate> read = CandidateJsonl.ReadAll(path, report);
        Assert.That(read, Is.EqualTo(new[] { Make(0), Make(1), Make(2) }));
        Assert.That(report.TruncatedLine, Is.EqualTo(4));
        Assert.That(report.TruncatedBytes, Is.EqualTo(half));
        Assert.That(report.TruncatedReason, Does.StartWith("invalid JSON"));
        Assert.That(report.ToString(), Does.Contain("dropped truncated last line 4"));

        // Resume: which pairs exist, which are still to be drawn.
        SavedCandidates saved = CandidateJsonl.Existing(path);
        Assert.That(saved.Count, Is.EqualTo(3));
        Assert.That(saved.Contains("math/test/algebra/17.json", 2), Is.True);
        Assert.That(saved.Contains("math/test/algebra/17.json", 3), Is.False);
        Assert.That(saved.Missing("math/test/algebra/17.json", 6), Is.EqualTo(new[] { 3, 4, 5 }));
        Assert.That(saved.Missing("other", 2), Is.EqualTo(new[] { 0, 1 }));
        Assert.That(saved.Questions, Is.EqualTo(new[] { "math/test/algebra/17.json" }));

        // Reopening removes the partial line before appending.
        using (CandidateJsonlWriter w = CandidateJsonlWriter.Open(path))
        {
            Assert.That(w.DroppedPartialBytes, Is.EqualTo(half));
            w.Append(Make(3));
        }

        var after = new CandidateReadReport();
        Assert.That(CandidateJsonl.ReadAll(path, after), Is.EqualTo(new[] { Make(0), Make(1), Make(2), Make(3) }));
        Assert.That(after.TruncatedLine, Is.Null);
        Assert.That(File.ReadAllText(path).Count(ch => ch == '\n'), Is.EqualTo(4));
    }

    [Test]
    public void A_complete_last_line_without_a_line_break_is_kept()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "c.jsonl");
        string text = Encoding.UTF8.GetString(CandidateJsonl.Serialize(Make(0))) + "\r\n\n" + Encoding.UTF8.GetString(CandidateJsonl.Serialize(Make(1)));
        File.WriteAllText(path, text);

        var report = new CandidateReadReport();
        Assert.That(CandidateJsonl.ReadAll(path, report), Is.EqualTo(new[] { Make(0), Make(1) }));
        Assert.That(report.TruncatedLine, Is.Null);
        Assert.That(report.Lines, Is.EqualTo(3));

        using (CandidateJsonlWriter w = CandidateJsonlWriter.Open(path))
        {
            Assert.That(w.DroppedPartialBytes, Is.EqualTo(0));
            w.Append(Make(2));
        }

        Assert.That(CandidateJsonl.ReadAll(path), Is.EqualTo(new[] { Make(0), Make(1), Make(2) }));
    }

    [Test]
    public void A_bad_line_in_the_middle_is_an_error_naming_file_and_line()
    {
        using var dir = new TempDir();
        string good = Encoding.UTF8.GetString(CandidateJsonl.Serialize(Make(0)));
        string path = dir.File("c.jsonl", good + "\n{\"question_id\": \"q\"\n" + good + "\n");
        var e = Assert.Throws<InvalidDataException>(() => CandidateJsonl.ReadAll(path));
        Assert.That(e!.Message, Does.Contain("c.jsonl:2:"));

        string missing = dir.File("m.jsonl", "{\"question_id\":\"q\",\"subject\":\"s\",\"index\":0,\"text\":\"t\",\"answer\":null,\"correct\":false,\"tokens\":3}\n");
        var e2 = Assert.Throws<InvalidDataException>(() => CandidateJsonl.ReadAll(missing));
        Assert.That(e2!.Message, Does.Contain("missing required properties including: 'log_prob'"));

        string negative = dir.File("n.jsonl", good.Replace("\"index\":0", "\"index\":-1", StringComparison.Ordinal) + "\n");
        var e3 = Assert.Throws<InvalidDataException>(() => CandidateJsonl.ReadAll(negative));
        Assert.That(e3!.Message, Does.Contain("\"index\" must be a non-negative integer"));
    }

    [Test]
    public void A_line_with_invalid_UTF8_is_an_error_naming_file_line_and_byte()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "c.jsonl");
        byte[] good = CandidateJsonl.Serialize(Make(0));
        byte[] bad = Encoding.UTF8.GetBytes("{\"question_id\":\"q\xff\",\"subject\":\"s\"}");
        int at = Array.IndexOf(bad, (byte)0xC3);
        bad[at] = 0xFF; bad[at + 1] = 0xFE;                              // not UTF-8
        File.WriteAllBytes(path, [.. good, (byte)'\n', .. bad, (byte)'\n', .. good, (byte)'\n']);
        var e = Assert.Throws<InvalidDataException>(() => CandidateJsonl.ReadAll(path));
        Assert.That(e!.Message, Does.Contain("c.jsonl:2: invalid UTF-8 at byte " + (at + 1)));
    }

    [Test]
    public void A_missing_rank_score_field_reads_as_unscored()
    {
        string line = "{\"question_id\":\"q\",\"subject\":\"s\",\"index\":4,\"text\":\"t\",\"answer\":\"7\",\"correct\":true,\"log_prob\":-2.5,\"tokens\":3}";
        Candidate c = CandidateJsonl.Parse(Encoding.UTF8.GetBytes(line));
        Assert.That(c, Is.EqualTo(new Candidate("q", "s", 4, "t", "7", true, -2.5, 3, null)));
    }

    [Test]
    public void Existing_of_a_file_that_does_not_exist_is_empty()
    {
        using var dir = new TempDir();
        SavedCandidates saved = CandidateJsonl.Existing(Path.Combine(dir.Path, "none.jsonl"));
        Assert.That(saved.Count, Is.EqualTo(0));
        Assert.That(saved.Missing("q", 3), Is.EqualTo(new[] { 0, 1, 2 }));
    }
}
