using NegDistill.Data;
using NegDistill.Data.Evaluation;

namespace NegDistill.Method;

/// <summary>A held-out question: id, subject, the question as the ranking model saw questions in
/// training, the prompt a student continues (<see cref="PromptFormat.Prompt"/>), the reference answer.</summary>
public sealed record TestQuestion(string Id, string Subject, string Question, string? ReferenceAnswer)
{
    public string Prompt => PromptFormat.Prompt(Question);

    /// <summary>A problem statement in the authors' format (<see cref="PromptFormat.Question"/>).</summary>
    public static TestQuestion FromProblem(string id, string subject, string problem, string? referenceAnswer) =>
        new(id, subject, PromptFormat.Question(problem), referenceAnswer);
}

/// <summary>MATH or GSM8K test data as <see cref="TestQuestion"/>s.</summary>
public static class TestSet
{
    /// <summary>Every question of <paramref name="path"/> (a malformed record is an error naming file and
    /// line), the first <paramref name="limit"/> when it is positive; at least one.</summary>
    public static List<TestQuestion> Load(AnswerTask task, string path, int limit)
    {
        var list = new List<TestQuestion>();
        if (task == AnswerTask.Math)
            foreach (var p in new MathDataLoader(MalformedPolicy.Stop).Load(path))
                list.Add(TestQuestion.FromProblem(p.UniqueId ?? $"{Path.GetFileName(p.SourceFile)}:{p.Line}", p.Subject, p.Problem, p.ReferenceAnswer));
        else
            foreach (var p in new Gsm8kLoader(MalformedPolicy.Stop).Load(path))
                list.Add(TestQuestion.FromProblem($"{Path.GetFileName(p.SourceFile)}:{p.Line}", Evaluator.Gsm8kColumn, p.Question, p.FinalAnswer));
        if (list.Count == 0) throw new InvalidDataException($"{path}: no questions");
        return limit > 0 ? list.Take(limit).ToList() : list;
    }
}
