using System.Text;
using System.Text.Json;

namespace NegDistill.Data.Synthetic;

/// <summary>One generated word problem with its gold chain of steps; <see cref="Level"/> is the number of steps.</summary>
public sealed record WorldProblem(string Id, string Question, int[] Operands, char[] Ops, string[] Verbs, int Answer, int Level)
{
    /// <summary>The gold solution in the MATH style: one line per step, the answer boxed.</summary>
    public string GoldSolution => ArithmeticWorld.Render(Operands, Ops, Verbs, ArithmeticWorld.Steps(Operands, Ops), Answer);

    /// <summary>The gold solution's step lines ("12 + 5 = 17."), without the answer line.</summary>
    public string[] GoldLines => ArithmeticWorld.Lines(GoldSolution);
}

/// <summary>Kinds of mistake the synthetic teacher makes, after the failure modes seen in real teacher
/// rationales.</summary>
public enum TeacherError { None, SlippedArithmetic, WrongOperation, DroppedStep, WrongFinalCopy }

/// <summary>How often the teacher errs. Per step (so a longer chain is more often wrong, and positives
/// are scarcer on the harder levels, as with a real teacher on MATH): an arithmetic slip (a result off by
/// 1 or by 10, a missed carry, carried into the later steps) or a misread verb (the wrong operation).
/// Per rationale, when every step was right: a dropped step (chains of two or more), then a wrong final
/// copy (right steps, another number boxed). The first error ends the draw: one error per rationale.</summary>
public sealed record TeacherErrorRates(double Slip = 0.12, double WrongOperation = 0.06, double DroppedStep = 0.05, double WrongFinalCopy = 0.06)
{
    /// <summary>The chance that a rationale of a problem with <paramref name="steps"/> steps is right.</summary>
    public double Correct(int steps) => Math.Pow(1 - Slip - WrongOperation, steps) * (steps > 1 ? 1 - DroppedStep : 1) * (1 - WrongFinalCopy);
}

/// <summary>
/// A small world the project makes for itself so the whole method can run on a CPU with no downloads:
/// word problems of 1–5 steps (the level) on a running count, a two-digit start and one-digit changes,
/// with a reference answer in \boxed{}, and a noisy "teacher" that writes 8 rationales per problem in
/// the authors' JSONL format, some right and some wrong in realistic ways (<see cref="TeacherErrorRates"/>).
/// Everything is a pure function of the seed.
/// </summary>
public static class ArithmeticWorld
{
    public const int MaxLevel = 5;
    static readonly string[] Names = ["Ada", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jon"];
    static readonly string[] Things = ["apples", "pens", "coins", "books", "shells", "cards", "eggs", "stamps"];
    static readonly string[] AddVerbs = ["gets", "finds"];
    static readonly string[] SubVerbs = ["gives away", "loses"];
    public const string AnswerPrefix = "The answer is \\boxed{";

    /// <summary>The phrases of <see cref="PhraseTokenizer"/> for this world's text: the headers, every word
    /// with its leading space, the step operators and the answer line.</summary>
    public static IReadOnlyList<string> Phrases { get; } = BuildPhrases();

    static List<string> BuildPhrases()
    {
        var p = new List<string> { PromptFormat.ProblemHeader, PromptFormat.Separator + PromptFormat.SolutionHeader, PromptFormat.SolutionHeader, AnswerPrefix, "}.", " + ", " - ", " = ", ".\n", ". ", ": ", " has ", " more", " How many ", " does ", " have now?" };
        p.AddRange(Names);
        p.AddRange(Names.Select(n => " " + n));
        p.AddRange(Things.Select(t => " " + t));
        p.AddRange(AddVerbs.Concat(SubVerbs).Select(v => " " + v + " "));
        p.AddRange(AddVerbs.Concat(SubVerbs).Select(v => v + " "));
        return p;
    }

    /// <summary>Problem <paramref name="index"/> of the world: its level uniform in 1..<paramref name="maxLevel"/>.</summary>
    public static WorldProblem Problem(ulong seed, int index, int maxLevel = MaxLevel)
    {
        var rng = Rng(seed, index);
        return Make(seed, index, 1 + rng.NextInt(maxLevel), ref rng);
    }

    /// <summary>Problem <paramref name="index"/> with the given number of steps.</summary>
    public static WorldProblem ProblemAtLevel(ulong seed, int index, int level)
    {
        var rng = Rng(seed, index);
        rng.NextInt(MaxLevel);                                 // the draw Problem(seed, index) spends on the level
        return Make(seed, index, level, ref rng);
    }

    static SplitMix64 Rng(ulong seed, int index) => new(seed * 1_000_003UL + (ulong)index);

    static WorldProblem Make(ulong seed, int index, int steps, ref SplitMix64 rng)
    {
        if (steps < 1 || steps > MaxLevel) throw new ArgumentOutOfRangeException(nameof(steps), $"levels are 1..{MaxLevel} (got {steps})");
        var operands = new int[steps + 1];
        var ops = new char[steps];
        var verbs = new string[steps];
        string name = Names[rng.NextInt(Names.Length)], thing = Things[rng.NextInt(Things.Length)];
        operands[0] = 10 + rng.NextInt(80);
        int value = operands[0];
        var q = new StringBuilder($"{name} has {operands[0]} {thing}.");
        for (int s = 0; s < steps; s++)
        {
            // no carry and no borrow: a change moves the ones digit only (x ≤ 9 − ones to add, x ≤ ones to take away)
            int ones = value % 10;
            bool add = ones == 0 || (ones < 9 && rng.NextInt(2) == 0);
            int x = 1 + rng.NextInt(add ? 9 - ones : ones);
            operands[s + 1] = x; ops[s] = add ? '+' : '-';
            value = add ? value + x : value - x;
            string verb = add ? AddVerbs[rng.NextInt(AddVerbs.Length)] : SubVerbs[rng.NextInt(SubVerbs.Length)];
            verbs[s] = add ? $"{verb} {x} more" : $"{verb} {x}";
            q.Append($" {name} {verbs[s]}.");
        }
        q.Append($" How many {thing} does {name} have now?");
        return new WorldProblem($"w{seed}-{index}", q.ToString(), operands, ops, verbs, value, steps);
    }

    internal static int[] Steps(int[] operands, char[] ops)
    {
        var r = new int[ops.Length];
        int v = operands[0];
        for (int i = 0; i < ops.Length; i++) { v = ops[i] == '+' ? v + operands[i + 1] : v - operands[i + 1]; r[i] = v; }
        return r;
    }

    /// <summary>One line per step, "gives away 4: 26 - 4 = 22.", the step's phrase from the question, then its
    /// arithmetic; then the answer line.</summary>
    internal static string Render(int[] operands, char[] ops, string[] verbs, int[] results, int boxed)
    {
        var sb = new StringBuilder();
        int v = operands[0];
        for (int i = 0; i < ops.Length; i++)
        {
            sb.Append($"{verbs[i]}: {v} {ops[i]} {operands[i + 1]} = {results[i]}.\n");
            v = results[i];
        }
        sb.Append($"{AnswerPrefix}{boxed}}}.");
        return sb.ToString();
    }

    /// <summary>The step lines of a solution or rationale (the "Solution:" header and the answer line left out).</summary>
    public static string[] Lines(string solution) =>
        solution.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && l != PromptFormat.SolutionHeader.Trim() && !l.StartsWith(AnswerPrefix, StringComparison.Ordinal)).ToArray();

    /// <summary>How many of the gold solution's step lines a rationale reproduces before its first
    /// difference: the part of its reasoning that is right.</summary>
    public static int CorrectPrefix(WorldProblem p, string rationale)
    {
        var gold = p.GoldLines;
        var lines = Lines(rationale);
        int k = 0;
        while (k < gold.Length && k < lines.Length && lines[k] == gold[k]) k++;
        return k;
    }

    /// <summary>One teacher rationale with the given error kind (None = a correct rationale).</summary>
    public static string Rationale(WorldProblem p, TeacherError error, ref SplitMix64 rng, int at = -1)
    {
        var operands = (int[])p.Operands.Clone();
        var ops = (char[])p.Ops.Clone();
        var verbs = p.Verbs;
        int[] results;
        if (at < 0) at = rng.NextInt(ops.Length);
        switch (error)
        {
            case TeacherError.SlippedArithmetic:
            {
                results = Steps(operands, ops);
                int delta = (1 + rng.NextInt(2)) * (rng.NextInt(2) == 0 ? 1 : -1);
                if (results[at] + delta < 0) delta = -delta;
                results[at] += delta;                        // the slip is carried into the later steps
                for (int i = at + 1; i < ops.Length; i++) results[i] = ops[i] == '+' ? results[i - 1] + operands[i + 1] : results[i - 1] - operands[i + 1];
                return Render(operands, ops, verbs, results, results[^1]);
            }
            case TeacherError.WrongOperation:
            {
                ops[at] = ops[at] == '+' ? '-' : '+';
                results = Steps(operands, ops);
                return Render(operands, ops, verbs, results, results[^1]);
            }
            case TeacherError.DroppedStep when ops.Length > 1:
            {
                var o2 = operands.Where((_, i) => i != at + 1).ToArray();
                var p2 = ops.Where((_, i) => i != at).ToArray();
                results = Steps(o2, p2);
                return Render(o2, p2, verbs.Where((_, i) => i != at).ToArray(), results, results[^1]);
            }
            case TeacherError.WrongFinalCopy:
            {
                results = Steps(operands, ops);
                int wrong = results[^1] + (1 + rng.NextInt(9)) * (rng.NextInt(2) == 0 ? 1 : -1);
                if (wrong < 0) wrong = results[^1] + 1 + rng.NextInt(9);
                return Render(operands, ops, verbs, results, wrong);
            }
            default:
                results = Steps(operands, ops);
                return Render(operands, ops, verbs, results, results[^1]);
        }
    }

    /// <summary>The teacher's <paramref name="n"/> rationales, each drawn as <see cref="TeacherErrorRates"/> describes.</summary>
    public static (string Text, TeacherError Error)[] Teacher(WorldProblem p, ulong seed, TeacherErrorRates? rates = null, int n = 8)
    {
        var e = rates ?? new TeacherErrorRates();
        var rng = new SplitMix64(seed ^ StableHash(p.Id) ^ 0xC0FFEEUL);   // string.GetHashCode is randomised per process
        var r = new (string, TeacherError)[n];
        for (int i = 0; i < n; i++)
        {
            var error = TeacherError.None;
            int at = 0;
            for (int s = 0; s < p.Level && error == TeacherError.None; s++)
            {
                double u = rng.NextDouble();
                if (u < e.Slip) (error, at) = (TeacherError.SlippedArithmetic, s);
                else if (u < e.Slip + e.WrongOperation) (error, at) = (TeacherError.WrongOperation, s);
            }
            if (error == TeacherError.None && p.Level > 1 && rng.NextDouble() < e.DroppedStep) (error, at) = (TeacherError.DroppedStep, rng.NextInt(p.Level));
            if (error == TeacherError.None && rng.NextDouble() < e.WrongFinalCopy) error = TeacherError.WrongFinalCopy;
            r[i] = (PromptFormat.Rationale(Rationale(p, error, ref rng, at)), error);
        }
        return r;
    }

    static ulong StableHash(string s)
    {
        ulong h = 14695981039346656037UL;                   // FNV-1a, 64-bit
        foreach (char c in s) { h ^= c; h *= 1099511628211UL; }
        return h;
    }

    /// <summary>The record of one problem in the authors' JSONL format (question, answer, generated_answer, level, type).</summary>
    public static TeacherRecord Record(WorldProblem p, ulong seed, string sourceFile, int line, TeacherErrorRates? rates = null) =>
        new(PromptFormat.Question(p.Question), p.GoldSolution, Teacher(p, seed, rates).Select(t => (string?)t.Text).ToList(), $"Level {p.Level}", "Arithmetic", sourceFile, line);

    /// <summary>Writes problems [from, from+count) with their teacher rationales as the authors' JSONL
    /// (question, answer, generated_answer[8], level, type).</summary>
    public static void WriteTeacherJsonl(string path, ulong seed, int from, int count, TeacherErrorRates? rates = null) =>
        WriteTeacherJsonl(path, seed, Enumerable.Range(from, count).Select(i => Problem(seed, i)), rates);

    public static void WriteTeacherJsonl(string path, ulong seed, IEnumerable<WorldProblem> problems, TeacherErrorRates? rates = null)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        using var w = new StreamWriter(path, false, new UTF8Encoding(false));
        foreach (var p in problems)
        {
            var gen = Teacher(p, seed, rates).Select(t => t.Text).ToArray();
            w.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["question"] = PromptFormat.Question(p.Question), ["answer"] = p.GoldSolution, ["generated_answer"] = gen,
                ["level"] = $"Level {p.Level}", ["type"] = "Arithmetic",
            }));
        }
    }
}
