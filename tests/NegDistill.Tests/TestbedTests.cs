using NegDistill.Data;
using NegDistill.Data.Evaluation;
using NegDistill.Method;
using NegDistill.Method.Testbed;

namespace NegDistill.Tests;

/// <summary>The testbed's tables on hand-made verdicts (per level, paired against the reference, the
/// intersection, the vote curves), its premise table on the world, and the run-wide ETA on a fake clock.</summary>
public class TestbedTests
{
    static bool[] B(string s) => s.Select(c => c == '1').ToArray();

    [Test]
    public void ByLevel_pools_every_seed_per_level()
    {
        int[] level = [1, 1, 2, 2, 3];
        var acc = TestbedReport.ByLevel([B("10110"), B("11001")], level);
        // level 1: 1,0 | 1,1 → 3/4; level 2: 1,1 | 0,0 → 2/4; level 3: 0 | 1 → 1/2
        Assert.That(acc, Is.EqualTo(new[] { 0.75, 0.5, 0.5 }));
        Assert.Throws<ArgumentException>(() => TestbedReport.ByLevel([B("101")], level));
    }

    [Test]
    public void Accuracy_rows_are_mean_and_sd_over_seeds_with_a_paired_test_against_the_reference()
    {
        int[] level = [1, 2, 1, 2, 1, 2, 1, 2, 1, 2];
        var kd = new ModelScores("kd", "KD", [B("1100000000"), B("1000000000")]);
        var x = new ModelScores("x", "X", [B("1111100000"), B("1111000000")]);
        var rows = TestbedReport.Accuracy([kd, x], level, "kd");
        Assert.That(rows[0].VsReference, Is.Null);
        Assert.That(rows[0].Mean, Is.EqualTo(0.15).Within(1e-12));
        Assert.That(rows[0].Sd, Is.EqualTo(Math.Sqrt(0.005)).Within(1e-12));   // 0.2 and 0.1 around 0.15
        var r = rows[1];
        Assert.That((r.Correct, r.Trials), Is.EqualTo((9, 20)));
        Assert.That(r.Mean, Is.EqualTo(0.45).Within(1e-12));
        Assert.That((r.Lo, r.Hi), Is.EqualTo(Stats.Wilson(9, 20)));
        // only X: seed 1 problems 2,3,4 and seed 2 problems 1,2,3 → 6; only KD: none
        Assert.That((r.VsReference!.OnlyA, r.VsReference.OnlyB), Is.EqualTo((6, 0)));
        Assert.That(r.VsReference.Delta, Is.EqualTo(0.3).Within(1e-12));
        Assert.That(r.VsReference.PValue, Is.EqualTo(2 / 64.0).Within(1e-15));
        // X per level: level 1 = problems 0,2,4,6,8 → seed 1: 1,1,1,0,0; seed 2: 1,1,0,0,0 → 5/10; level 2: 1,1,0,0,0 | 1,1,0,0,0 → 4/10
        Assert.That(r.ByLevel, Is.EqualTo(new[] { 0.5, 0.4 }));
        Assert.That(TestbedReport.AccuracyTable(rows, "KD", 2, 10), Does.Contain("| X | 45.0 ± 7.1 |").And.Contain("+30.0").And.Contain("0.031 (6 / 0)"));
    }

    [Test]
    public void Pair_table_shows_the_difference_its_interval_and_the_discordant_counts()
    {
        var c = Stats.Paired([[true], [true], [false], [true]], [[false], [true], [false], [false]]);
        string t = TestbedReport.PairTable([("A", "B", c)]);
        Assert.That(t, Does.Contain("| A | B | +50.0 [").And.Contain($"{TestbedReport.P(Stats.McNemarExact(2, 0))} (2 / 0) |"));
        Assert.That(TestbedReport.P(0.0004), Is.EqualTo("< 0.001"));
        Assert.That(TestbedReport.P(0.0123), Is.EqualTo("0.012"));
    }

    [Test]
    public void Intersection_counts_the_four_cells()
    {
        var i = TestbedReport.Intersect(B("110010"), B("011000"));
        Assert.That((i.OnlyNegative, i.OnlyPositive, i.Both, i.Neither), Is.EqualTo((2, 1, 1, 2)));
        Assert.That((i.Negative, i.Positive, i.Union), Is.EqualTo((3, 2, 4)));
        Assert.That(TestbedReport.IntersectionTable([i, i], "NEG", "POS"), Does.Contain("| solved by NEG and missed by POS | 2.0 ± 0.0 |").And.Contain("66.7 ± 0.0"));
    }

    [Test]
    public void Vote_curve_votes_the_first_n_candidates_of_each_question()
    {
        static Candidate C(string q, int i, string answer, double rank) =>
            Candidate.FromText(AnswerTask.Math, q, "Level 1", i, $"x \\boxed{{{answer}}}", null, -1, 2, rank);
        var qs = new[] { new TestQuestion("a", "Level 1", "Problem:\nA", "5"), new TestQuestion("b", "Level 1", "Problem:\nB", "7") };
        var cands = new List<Candidate>
        {
            C("a", 0, "5", 0.1), C("a", 1, "6", 0.9), C("a", 2, "6", 0.2),
            C("b", 0, "1", 0.3), C("b", 1, "7", 0.8), C("b", 2, "7", 0.9),
        };
        // SC: N=1 a right, b wrong → 0.5; N=2 a tie 5/6 → ½, b tie 1/7 → ½ → 0.5; N=3 a wrong (6 twice), b right → 0.5
        Assert.That(TestbedReport.VoteCurve(VoteMethod.Sc, AnswerTask.Math, qs, cands, 3), Is.EqualTo(new[] { 0.5, 0.5, 0.5 }));
        // ASC: N=2 a: 6 (0.9) beats 5 (0.1) → 0; b: 7 (0.8) beats 1 (0.3) → 1 → 0.5
        Assert.That(TestbedReport.VoteCurve(VoteMethod.Asc, AnswerTask.Math, qs, cands, 3)[1], Is.EqualTo(0.5));
        Assert.Throws<ArgumentException>(() => TestbedReport.VoteCurve(VoteMethod.Sc, AnswerTask.Math, qs, cands.Take(3).ToList(), 1));
    }

    [Test]
    public void Premise_rows_split_the_teachers_rationales_by_level()
    {
        var world = new TestbedWorld(1, trainProblems: 60, pretrainProblems: 10, testProblems: 10, rankProblems: 2);
        var rows = TestbedWorld.Premise(world.Train, 1);
        Assert.That(rows.Sum(r => r.Rationales), Is.EqualTo(60 * 8));
        Assert.That(rows.Sum(r => r.Problems), Is.EqualTo(60));
        foreach (var r in rows)
        {
            Assert.That(r.Slips + r.WrongOperations + r.DroppedSteps + r.WrongFinalCopies, Is.EqualTo(r.Negatives), $"level {r.Level}: one error per negative");
            Assert.That(r.NegativesAllStepsRight, Is.EqualTo(r.WrongFinalCopies), "only a wrong final copy keeps every step");
            Assert.That(r.NegativesWithACorrectStep, Is.LessThanOrEqualTo(r.Negatives));
        }
        Assert.That(rows[0].DroppedSteps, Is.EqualTo(0), "a one-step chain has no step to drop");
        // the test set: balanced over the levels, and no question seen in training or pretraining
        Assert.That(world.Test.GroupBy(p => p.Level).Select(g => g.Count()), Has.All.EqualTo(2));
        Assert.That(world.Test.Select(p => p.Question).Intersect(world.Train.Concat(world.Pretrain).Select(p => p.Question)), Is.Empty);
        Assert.That(TestbedReport.PremiseTable(rows), Does.Contain("| all | 60 | 480 |"));
    }

    sealed class Sink : IReporter
    {
        public readonly List<string> Infos = new();
        public void Line(string text) { }
        public void Progress(string name, int done, int total, string info) => Infos.Add(info);
        public void EndProgress(string name) { }
    }

    [Test]
    public void Run_progress_estimates_the_whole_run_from_the_measured_rate()
    {
        var now = TimeSpan.Zero;
        var sink = new Sink();
        var p = new RunProgress(sink, [("a", 10), ("b", 30), ("c", 60)], () => now);
        Assert.That(p.Eta, Is.Null);
        p.Begin("a");
        now = TimeSpan.FromSeconds(10);
        p.Progress("a", 1, 2, "step");                       // a half done: 5 units in 10 s → 2 s per unit, 95 left
        Assert.That(p.Fraction, Is.EqualTo(0.05).Within(1e-12));
        Assert.That(p.Eta!.Value.TotalSeconds, Is.EqualTo(190).Within(1e-9));
        Assert.That(sink.Infos[^1], Is.EqualTo("step  | run 5 % ETA 03:10"));
        now = TimeSpan.FromSeconds(20);
        p.Begin("b");                                        // a done in 20 s
        p.Done("b", skipped: true);                          // b was on disk: done, no time
        Assert.That(p.Fraction, Is.EqualTo(0.4).Within(1e-12));
        Assert.That(p.Eta!.Value.TotalSeconds, Is.EqualTo(120).Within(1e-9), "60 units left at 2 s per unit");
        Assert.Throws<ArgumentException>(() => p.Begin("z"));
        Assert.Throws<ArgumentException>(() => new RunProgress(sink, [("a", 1), ("a", 2)]));
    }
}
