using System.Diagnostics;
using System.Text;
using NegDistill.Data;

namespace NegDistill.Data.Tests;

public class SplitTests
{
    private static TeacherRecord Record(string question, string answer, string?[] rationales, string level = "Level 2", string type = "Prealgebra", int line = 1) =>
        new(question, answer, rationales, level, type, "mem.jsonl", line);

    [Test]
    public void Positives_and_negatives_follow_the_checker()
    {
        var rec = Record("Problem:\nHalf of 1?", "It is $\\boxed{\\frac{1}{2}}$.",
        [
            "Solution:\nso \\boxed{0.5}",              // 0.5 -> \frac{1}{2}: positive
            "Solution:\nso \\boxed{1/2}",              // a/b -> \frac{a}{b}: positive
            "Solution:\nso \\boxed{\\dfrac12}",        // dfrac + \frac12: positive
            "Solution:\nso \\boxed{2}",                // negative
            "Solution:\nso \\fbox{1/2}",               // fbox: None vs answer: negative
            "Solution:\nno box at all",                // None: negative
            "Solution:\n\\boxed{1/2} then \\boxed{3}", // last box counts: negative
        ]);
        SplitResult r = new DatasetSplitter().Split([rec]);

        Assert.That(r.Positives.Select(p => p.SourceId), Is.EqualTo(new[] { "mem.jsonl:1#0", "mem.jsonl:1#1", "mem.jsonl:1#2" }));
        Assert.That(r.Negatives.Select(p => p.SourceId), Is.EqualTo(new[] { "mem.jsonl:1#3", "mem.jsonl:1#4", "mem.jsonl:1#5", "mem.jsonl:1#6" }));
        Assert.That(r.Positives.All(p => p.Positive) && r.Negatives.All(p => !p.Positive), Is.True);
        Pair first = r.Positives[0];
        Assert.That(first.Text, Is.EqualTo("Problem:\nHalf of 1?\nSolution:\nso \\boxed{0.5}"));
        Assert.That(first.Subject, Is.EqualTo("prealgebra"));
        Assert.That(first.Level, Is.EqualTo("Level 2"));
        Assert.That(r.Summary.Positives, Is.EqualTo(3));
        Assert.That(r.Summary.Negatives, Is.EqualTo(4));
        Assert.That(r.Summary.InvariantHolds, Is.True);
    }

    [Test]
    public void Reference_without_answer_makes_unanswered_rationales_positive()
    {
        // The reference checker's None == None rule, kept on purpose.
        var rec = Record("Q", "reference with \\fbox{3} only", ["no box", "\\fbox{3}", "\\boxed{3}"]);
        SplitResult r = new DatasetSplitter().Split([rec]);
        Assert.That(r.Positives.Select(p => p.Rationale), Is.EqualTo(new[] { "no box", "\\fbox{3}" }));
        Assert.That(r.Negatives.Single().Rationale, Is.EqualTo("\\boxed{3}"));
        Assert.That(r.Summary.Questions.ReferenceWithoutAnswer, Is.EqualTo(1));
    }

    [Test]
    public void Length_limit_is_on_code_points_of_question_newline_rationale_and_strict()
    {
        string question = "Q" + new string('q', 98);                  // 99 code points
        string Fill(int total) => new string('r', total - question.Length - 1 - "\\boxed{1}".Length) + "\\boxed{1}";
        string at1199 = Fill(1199);
        string at1200 = Fill(1200);
        // 20 astral characters: 40 UTF-16 units but 20 code points.
        string astral = string.Concat(Enumerable.Repeat("𝑥", 20)) + Fill(1199)[20..];
        Assert.That((question + "\n" + at1199).Length, Is.EqualTo(1199));
        Assert.That((question + "\n" + astral).Length, Is.EqualTo(1219));
        Assert.That(MathChecker.CodePointCount(question + "\n" + astral), Is.EqualTo(1199));

        var rec = Record(question, "\\boxed{1}", [at1199, at1200, astral, Fill(1200) + "x"]);
        SplitResult r = new DatasetSplitter().Split([rec]);
        Assert.That(r.Positives.Select(p => p.SourceId), Is.EqualTo(new[] { "mem.jsonl:1#0", "mem.jsonl:1#2" }));
        Assert.That(r.Summary.DroppedPositives, Is.EqualTo(2));   // exactly 1,200 is dropped (authors: keep iff len < 1200)

        SplitResult loose = new DatasetSplitter(new SplitOptions { MaxTextLength = 1201 }).Split([rec]);
        Assert.That(loose.Positives, Has.Count.EqualTo(3));
    }

    [Test]
    public void Per_subject_per_level_and_question_views_add_up()
    {
        string longText = new string('x', 1300);
        TeacherRecord[] records =
        [
            Record("A", "\\boxed{1}", ["\\boxed{1}", "\\boxed{2}"], "Level 1", "Algebra", 1),          // pos + neg
            Record("B", "\\boxed{1}", ["\\boxed{2}", "\\boxed{3}"], "Level 1", "Geometry", 2),         // only negatives
            Record("C", "\\boxed{1}", [longText + "\\boxed{1}", null], "Level 5", "Geometry", 3),      // dropped pos + malformed
            Record("D", "\\boxed{7}", ["\\boxed{7}", "\\boxed{7.0}"], "Level 5", "Counting & Probability", 4), // pos + neg
            Record("E", "\\boxed{4}", ["\\boxed{4}", "\\boxed{4}"], "Level 10", "Algebra", 5),          // all positive
            Record("F", "\\boxed{4}", [], "Level 2", "Algebra", 6),                                       // no rationales
        ];
        SplitSummary s = new DatasetSplitter().Split(records).Summary;

        Assert.That(s.Records, Is.EqualTo(6));
        Assert.That(s.Rationales, Is.EqualTo(10));
        Assert.That((s.Positives, s.Negatives, s.DroppedPositives, s.DroppedNegatives, s.MalformedRationales), Is.EqualTo((4L, 4L, 1L, 0L, 1L)));
        Assert.That(s.InvariantHolds, Is.True);

        Assert.That(s.BySubject.Keys, Is.EqualTo(new[] { "algebra", "counting_and_probability", "geometry" }));
        Assert.That(s.BySubject["algebra"], Is.EqualTo(new SplitCounts(4, 3, 1, 0, 0, 0)));
        Assert.That(s.BySubject["geometry"], Is.EqualTo(new SplitCounts(4, 0, 2, 1, 0, 1)));
        Assert.That(s.BySubject["counting_and_probability"], Is.EqualTo(new SplitCounts(2, 1, 1, 0, 0, 0)));
        Assert.That(s.ByLevel.Keys, Is.EqualTo(new[] { "Level 1", "Level 2", "Level 5", "Level 10" })); // natural order
        Assert.That(s.ByLevel["Level 5"].Rationales, Is.EqualTo(4));

        QuestionCounts q = s.Questions;
        Assert.That(q, Is.EqualTo(new QuestionCounts(
            Total: 6, WithPositive: 3, OnlyNegatives: 1, NoneKept: 2, AllPositive: 1,
            WithPositiveBeforeLengthFilter: 4, PositivesOnlyDropped: 1, ReferenceWithoutAnswer: 0)));
        Assert.That(q.WithPositive + q.OnlyNegatives + q.NoneKept, Is.EqualTo(q.Total));
    }

    [Test]
    public void Split_from_files_counts_records_the_loader_skipped()
    {
        using var dir = new TempDir();
        dir.File("t/0.jsonl", string.Join("\n",
            Json.Teacher("Q1", "\\boxed{1}", ["\\boxed{1}", "\\boxed{2}"]),
            "{\"answer\": \"x\", \"generated_answer\": [\"a\", \"b\", \"c\"]}",
            "garbage",
            "{\"question\": \"Q\", \"answer\": \"\\\\boxed{1}\", \"generated_answer\": [\"\\\\boxed{1}\", 3]}") + "\n");
        SplitResult r = new DatasetSplitter().SplitPath(Path.Combine(dir.Path, "t"), MalformedPolicy.Skip);
        SplitSummary s = r.Summary;
        Assert.That(s.Records, Is.EqualTo(2));
        Assert.That(s.MalformedRecords, Is.EqualTo(2));
        Assert.That(s.Rationales, Is.EqualTo(2 + 3 + 2));
        Assert.That(s.MalformedRationales, Is.EqualTo(3 + 1));
        Assert.That((s.Positives, s.Negatives), Is.EqualTo((2L, 1L)));
        Assert.That(s.InvariantHolds, Is.True);
        Assert.That(s.InputBytes, Is.GreaterThan(0));

        Assert.Throws<MalformedRecordException>(() => new DatasetSplitter().SplitPath(Path.Combine(dir.Path, "t"), MalformedPolicy.Stop));
    }

    /// <summary>Property: the split never loses a rationale, whatever the records look like.</summary>
    [Test]
    public void Property_split_never_loses_a_rationale()
    {
        var rng = new SplitMix64(7);
        string[] answers = ["1", "2", "\\frac12", "0.5", "1/2", "x", "\\sqrt3", "\\sqrt{3}", "10\\%", "10", "\\frac", ""];
        string[] subjects = ["Algebra", "Geometry", "Number Theory", "Precalculus"];
        string Box() => "\\boxed{" + answers[rng.NextInt(answers.Length)] + "}";
        for (int trial = 0; trial < 200; trial++)
        {
            int n = 1 + rng.NextInt(30);
            var records = new List<TeacherRecord>();
            long expected = 0;
            for (int i = 0; i < n; i++)
            {
                string reference = Box();
                int m = rng.NextInt(10);
                var rs = new string?[m];
                for (int k = 0; k < m; k++)
                {
                    int kind = rng.NextInt(10);
                    rs[k] = kind switch
                    {
                        0 => null,
                        1 => new string('w', 1100 + rng.NextInt(200)) + Box(),
                        2 => "no box",
                        _ => "Solution:\n" + Box(),
                    };
                }

                expected += m;
                records.Add(Record("Problem " + i, reference, rs, "Level " + (1 + rng.NextInt(5)), subjects[rng.NextInt(subjects.Length)], i + 1));
            }

            SplitResult r = new DatasetSplitter().Split(records);
            SplitSummary s = r.Summary;
            Assert.That(s.Rationales, Is.EqualTo(expected));
            Assert.That(s.Positives + s.Negatives + s.DroppedForLength + s.MalformedRationales, Is.EqualTo(expected));
            Assert.That(r.Positives.Count + r.Negatives.Count, Is.EqualTo(s.Positives + s.Negatives));
            Assert.That(s.BySubject.Values.Sum(c => c.Rationales), Is.EqualTo(expected));
            Assert.That(s.ByLevel.Values.Sum(c => c.Positives + c.Negatives + c.Dropped + c.Malformed), Is.EqualTo(expected));
            Assert.That(s.Questions.WithPositive + s.Questions.OnlyNegatives + s.Questions.NoneKept, Is.EqualTo(n));
        }
    }

    [Test]
    public void Throughput_over_60000_rationales()
    {
        // 7,500 synthetic records x 8 rationales, MATH-like text, written as JSONL and split from disk.
        using var dir = new TempDir();
        var rng = new SplitMix64(123);
        var sb = new StringBuilder();
        string[] subjects = ["Algebra", "Counting & Probability", "Geometry", "Intermediate Algebra", "Number Theory", "Prealgebra", "Precalculus"];
        for (int i = 0; i < 7_500; i++)
        {
            int a = rng.NextInt(50), b = 1 + rng.NextInt(9);
            string question = $"Problem:\nIf $x = {a}$ and $y = \\frac{{{a}}}{{{b}}}$, compute $x + y$ expressed as a common fraction. " + new string('.', rng.NextInt(400));
            string answer = $"We have $x+y = {a} + \\frac{{{a}}}{{{b}}} = \\boxed{{\\frac{{{a * b + a}}}{{{b}}}}}$.";
            var rationales = new string[8];
            for (int k = 0; k < 8; k++)
            {
                string final = rng.NextInt(2) == 0 ? $"\\dfrac{{{a * b + a}}}{{{b}}}" : $"{a * b + a + 1}/{b}";
                rationales[k] = $"Solution:\nFirst, $x = {a}$. Then $y = \\frac{{{a}}}{{{b}}}$, so the sum is " +
                                new string('z', rng.NextInt(900)) + $" \\left( {a} \\right) $\\boxed{{{final}}}$.";
            }

            sb.Append(Json.Teacher(question, answer, rationales, "Level " + (1 + (i % 5)), subjects[i % 7])).Append('\n');
        }

        string file = dir.File("synthetic/train.jsonl", sb.ToString());
        var sw = Stopwatch.StartNew();
        SplitResult r = new DatasetSplitter(new SplitOptions { CollectPairs = false }).SplitPath(file, MalformedPolicy.Stop);
        sw.Stop();
        SplitSummary s = r.Summary;

        Assert.That(s.Rationales, Is.EqualTo(60_000));
        Assert.That(s.InvariantHolds, Is.True);
        Assert.That(s.Positives, Is.GreaterThan(0));
        Assert.That(s.Negatives, Is.GreaterThan(0));
        Assert.That(s.DroppedForLength, Is.GreaterThan(0));
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(20)));
        TestContext.Out.WriteLine(
            $"split throughput: {s.Rationales:N0} rationales ({s.InputBytes / 1048576.0:F1} MiB JSONL) in {sw.Elapsed.TotalSeconds:F3} s " +
            $"= {s.Rationales / sw.Elapsed.TotalSeconds:N0} rationales/s (load + check + split)");
    }
}
