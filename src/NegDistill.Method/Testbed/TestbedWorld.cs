using NegDistill.Data;
using NegDistill.Data.Synthetic;

namespace NegDistill.Method.Testbed;

/// <summary>The teacher's data at one level: how many of its rationales are right, and what the wrong ones
/// still get right. "Correct steps" counts a negative's step lines that equal the gold solution's before
/// its first difference.</summary>
public sealed record PremiseRow(int Level, int Problems, int Rationales, int Positives, int Slips, int WrongOperations, int DroppedSteps, int WrongFinalCopies,
    double NegativeCorrectStepShare, int NegativesWithACorrectStep, int NegativesAllStepsRight)
{
    public int Negatives => Rationales - Positives;
}

/// <summary>
/// The testbed's problem sets, all from one world seed, disjoint by index range and by question text: the teacher's training problems, the pretraining corpus (gold solutions), the test set
/// (<see cref="TestProblems"/>, balanced over the levels) and the problems whose teacher rationales the ranking
/// model is judged on.
/// </summary>
public sealed class TestbedWorld
{
    public const string Subject = "Arithmetic";
    const int PretrainFrom = 500_000, TestFrom = 1_000_000, RankFrom = 2_000_000;

    public TestbedWorld(ulong seed, int trainProblems, int pretrainProblems, int testProblems, int rankProblems, int pretrainMaxLevel = ArithmeticWorld.MaxLevel)
    {
        Seed = seed;
        Train = Enumerable.Range(0, trainProblems).Select(i => ArithmeticWorld.Problem(seed, i)).ToList();
        // the test set: none of its questions among the training ones; the pretraining corpus: none among either
        // (so the test set does not depend on how long the base pretrains)
        var seen = Train.Select(p => p.Question).ToHashSet();
        var test = new List<WorldProblem>();
        for (int i = TestFrom; test.Count < testProblems; i++)
        {
            var p = ArithmeticWorld.ProblemAtLevel(seed, i, 1 + test.Count % ArithmeticWorld.MaxLevel);
            if (seen.Add(p.Question)) test.Add(p);
        }
        Test = test;
        var pretrain = new List<WorldProblem>();
        for (int i = PretrainFrom; pretrain.Count < pretrainProblems; i++)
        {
            var p = ArithmeticWorld.Problem(seed, i, pretrainMaxLevel);
            if (!seen.Contains(p.Question)) pretrain.Add(p);
        }
        Pretrain = pretrain;
        Rank = Enumerable.Range(RankFrom, rankProblems).Select(i => ArithmeticWorld.Problem(seed, i)).ToList();
    }

    public ulong Seed { get; }
    public IReadOnlyList<WorldProblem> Train { get; }
    public IReadOnlyList<WorldProblem> Pretrain { get; }
    public IReadOnlyList<WorldProblem> Test { get; }
    public IReadOnlyList<WorldProblem> Rank { get; }

    /// <summary>A problem with its gold solution as a training pair (the pretraining corpus).</summary>
    public static Pair GoldPair(WorldProblem p) =>
        new(PromptFormat.Question(p.Question), PromptFormat.Rationale(p.GoldSolution), Subject, $"Level {p.Level}", true, p.Id);

    /// <summary>The test set as the evaluation reads it: reference = the integer answer (the numeric checker), subject = the level.</summary>
    public IReadOnlyList<TestQuestion> TestQuestions =>
        Test.Select(p => TestQuestion.FromProblem(p.Id, $"Level {p.Level}", p.Question, p.Answer.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToList();

    /// <summary>Teacher records of the ranking model's held-out problems (the split decides their labels).</summary>
    public IEnumerable<TeacherRecord> RankRecords => Rank.Select((p, i) => ArithmeticWorld.Record(p, Seed, "held-out", i));

    /// <summary>The paper's premise measured on the teacher's data for <paramref name="problems"/>: per level, the
    /// share of positives and, of the negatives, their error and how much of their reasoning is still right.
    /// Positivity is the exact MATH checker's verdict, as in the split.</summary>
    public static IReadOnlyList<PremiseRow> Premise(IEnumerable<WorldProblem> problems, ulong seed)
    {
        var rows = new List<PremiseRow>();
        foreach (var level in problems.GroupBy(p => p.Level).OrderBy(g => g.Key))
        {
            int n = 0, pos = 0, neg = 0, withStep = 0, allSteps = 0;
            var kinds = new Dictionary<TeacherError, int>();
            double stepShare = 0;
            foreach (var p in level)
                foreach (var (text, error) in ArithmeticWorld.Teacher(p, seed))
                {
                    n++;
                    if (MathChecker.IsCorrect(text, p.GoldSolution)) { pos++; continue; }
                    neg++;
                    kinds[error] = kinds.GetValueOrDefault(error) + 1;
                    int right = ArithmeticWorld.CorrectPrefix(p, text);
                    stepShare += (double)right / p.Level;
                    if (right > 0) withStep++;
                    if (right == p.Level) allSteps++;
                }
            rows.Add(new PremiseRow(level.Key, level.Count(), n, pos, kinds.GetValueOrDefault(TeacherError.SlippedArithmetic), kinds.GetValueOrDefault(TeacherError.WrongOperation),
                kinds.GetValueOrDefault(TeacherError.DroppedStep), kinds.GetValueOrDefault(TeacherError.WrongFinalCopy), neg > 0 ? stepShare / neg : 0, withStep, allSteps));
        }
        return rows;
    }
}
