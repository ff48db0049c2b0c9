using System.Text;
using System.Text.Json;

namespace NegDistill.Data.Synthetic;

/// <summary>One generated word problem with its gold chain of steps.</summary>
public sealed record WorldProblem(string Id, string Question, int[] Operands, char[] Ops, int Answer, int Level)
{
    /// <summary>The gold solution in the MATH style: one line per step, the answer boxed.</summary>
    public string GoldSolution => ArithmeticWorld.Render(Operands, Ops, ArithmeticWorld.Steps(Operands, Ops), Answer);
}

/// <summary>Kinds of mistake the synthetic teacher makes, after the failure modes seen in real teacher
/// rationales.</summary>
public enum TeacherError { None, SlippedArithmetic, WrongOperation, DroppedStep, WrongFinalCopy }

/// <summary>
/// A small world the project makes for itself so the whole method can run on a CPU with no
/// downloads: arithmetic word problems of 2–4 steps with a reference answer in \boxed{}, and a noisy
/// "teacher" that writes 8 rationales per problem in the authors' JSONL format, some right and some
/// wrong in realistic ways (a slipped sum carried forward, a wrong operation, a dropped step, right
/// steps with a wrong final copy). Everything is a pure function of the seed.
/// </summary>
public static class ArithmeticWorld
{
    static readonly string[] Names = ["Ada", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jon"];
    static readonly string[] Things = ["apples", "pens", "coins", "books", "shells", "cards", "eggs", "stamps"];

    public static WorldProblem Problem(ulong seed, int index)
    {
        var rng = new SplitMix64(seed * 1_000_003UL + (ulong)index);
        int steps = 1 + rng.NextInt(3);                     // 1–3 operations after the start value
        var operands = new int[steps + 1];
        var ops = new char[steps];
        string name = Names[rng.NextInt(Names.Length)], thing = Things[rng.NextInt(Things.Length)];
        operands[0] = 5 + rng.NextInt(40);
        int value = operands[0];
        var q = new StringBuilder($"{name} has {operands[0]} {thing}.");
        for (int s = 0; s < steps; s++)
        {
            bool add = value < 8 || rng.NextInt(2) == 0;
            int x = add ? 2 + rng.NextInt(30) : 1 + rng.NextInt(Math.Max(1, value - 1));
            operands[s + 1] = x; ops[s] = add ? '+' : '-';
            value = add ? value + x : value - x;
            q.Append(add ? $" {name} gets {x} more." : $" {name} gives away {x}.");
        }
        q.Append($" How many {thing} does {name} have now?");
        return new WorldProblem($"w{seed}-{index}", q.ToString(), operands, ops, value, steps);
    }

    internal static int[] Steps(int[] operands, char[] ops)
    {
        var r = new int[ops.Length];
        int v = operands[0];
        for (int i = 0; i < ops.Length; i++) { v = ops[i] == '+' ? v + operands[i + 1] : v - operands[i + 1]; r[i] = v; }
        return r;
    }

    internal static string Render(int[] operands, char[] ops, int[] results, int boxed)
    {
        var sb = new StringBuilder();
        int v = operands[0];
        for (int i = 0; i < ops.Length; i++)
        {
            sb.Append($"{v} {ops[i]} {operands[i + 1]} = {results[i]}.\n");
            v = results[i];
        }
        sb.Append($"The answer is \\boxed{{{boxed}}}.");
        return sb.ToString();
    }

    /// <summary>One teacher rationale with the given error kind (None = a correct rationale).</summary>
    public static string Rationale(WorldProblem p, TeacherError error, ref SplitMix64 rng)
    {
        var operands = (int[])p.Operands.Clone();
        var ops = (char[])p.Ops.Clone();
        int[] results;
        switch (error)
        {
            case TeacherError.SlippedArithmetic:
            {
                results = Steps(operands, ops);
                int at = rng.NextInt(ops.Length), delta = (1 + rng.NextInt(3)) * (rng.NextInt(2) == 0 ? 1 : -1);
                results[at] += delta;                        // the slip is carried into the later steps
                for (int i = at + 1; i < ops.Length; i++) results[i] = ops[i] == '+' ? results[i - 1] + operands[i + 1] : results[i - 1] - operands[i + 1];
                return Render(operands, ops, results, results[^1]);
            }
            case TeacherError.WrongOperation:
            {
                int at = rng.NextInt(ops.Length);
                ops[at] = ops[at] == '+' ? '-' : '+';
                results = Steps(operands, ops);
                return Render(operands, ops, results, results[^1]);
            }
            case TeacherError.DroppedStep when ops.Length > 1:
            {
                int at = rng.NextInt(ops.Length);
                var o2 = operands.Where((_, i) => i != at + 1).ToArray();
                var p2 = ops.Where((_, i) => i != at).ToArray();
                results = Steps(o2, p2);
                return Render(o2, p2, results, results[^1]);
            }
            case TeacherError.WrongFinalCopy:
            {
                results = Steps(operands, ops);
                int wrong = results[^1] + (1 + rng.NextInt(9)) * (rng.NextInt(2) == 0 ? 1 : -1);
                return Render(operands, ops, results, wrong);
            }
            default:
                results = Steps(operands, ops);
                return Render(operands, ops, results, results[^1]);
        }
    }

    /// <summary>The teacher's 8 rationales: each is correct with probability pCorrect, otherwise one of
    /// the four error kinds chosen uniformly (a dropped step on a one-step problem falls back to a slip).</summary>
    public static (string Text, TeacherError Error)[] Teacher(WorldProblem p, ulong seed, double pCorrect = 0.5, int n = 8)
    {
        var rng = new SplitMix64(seed ^ StableHash(p.Id) ^ 0xC0FFEEUL);   // string.GetHashCode is randomised per process
        var r = new (string, TeacherError)[n];
        for (int i = 0; i < n; i++)
        {
            var e = rng.NextDouble() < pCorrect ? TeacherError.None : (TeacherError)(1 + rng.NextInt(4));
            if (e == TeacherError.DroppedStep && p.Ops.Length == 1) e = TeacherError.SlippedArithmetic;
            r[i] = (PromptFormat.Rationale(Rationale(p, e, ref rng)), e);
        }
        return r;
    }

    static ulong StableHash(string s)
    {
        ulong h = 14695981039346656037UL;                   // FNV-1a, 64-bit
        foreach (char c in s) { h ^= c; h *= 1099511628211UL; }
        return h;
    }

    /// <summary>Writes problems [from, from+count) with their teacher rationales as the authors' JSONL
    /// (question, answer, generated_answer[8], level, type).</summary>
    public static void WriteTeacherJsonl(string path, ulong seed, int from, int count, double pCorrect = 0.5)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        using var w = new StreamWriter(path, false, new UTF8Encoding(false));
        for (int i = from; i < from + count; i++)
        {
            var p = Problem(seed, i);
            var gen = Teacher(p, seed, pCorrect).Select(t => t.Text).ToArray();
            w.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["question"] = PromptFormat.Question(p.Question), ["answer"] = p.GoldSolution, ["generated_answer"] = gen,
                ["level"] = $"Level {p.Level}", ["type"] = "Arithmetic",
            }));
        }
    }
}
