namespace NegDistill.Data.Evaluation;

/// <summary>
/// One sampled (or greedy) answer of the student to one test question, as saved by the sampling run
/// and read back by every aggregation, so greedy, SC, WS and ASC at every N are computed from the same
/// saved candidates.
/// </summary>
/// <param name="QuestionId">The test question this candidate answers.</param>
/// <param name="Subject">The question's subject (a MATH subject name, or e.g. "gsm8k").</param>
/// <param name="Index">The sample number, 0..N-1, in the order the candidates were drawn; the
/// aggregations over N candidates use the N smallest indices.</param>
/// <param name="Text">The generated rationale.</param>
/// <param name="Answer">The extracted final answer (<see cref="TaskAnswers.Extract"/>: the last boxed
/// content for MATH, <see cref="Gsm8kChecker.ExtractPredictedAnswer"/> for GSM8K); <c>null</c> when the
/// text has none, and then the candidate takes no part in any vote.</param>
/// <param name="Correct">Whether <paramref name="Answer"/> matched the reference when it was saved.</param>
/// <param name="LogProb">Sum of the natural-log probabilities of the generated tokens.</param>
/// <param name="Tokens">Number of generated tokens that <paramref name="LogProb"/> sums over.</param>
/// <param name="RankScore">The ranking model's score M_rank(question, rationale) in [0, 1];
/// <c>null</c> until the candidate has been scored.</param>
public sealed record Candidate(
    string QuestionId,
    string Subject,
    int Index,
    string Text,
    string? Answer,
    bool Correct,
    double LogProb,
    int Tokens,
    double? RankScore = null)
{
    /// <summary>
    /// A candidate from its generated text: the answer is extracted with the task's checker and judged
    /// against <paramref name="referenceAnswer"/> (an already extracted reference answer, see
    /// <see cref="TaskAnswers.ExtractReference"/>).
    /// </summary>
    public static Candidate FromText(
        AnswerTask task,
        string questionId,
        string subject,
        int index,
        string text,
        string? referenceAnswer,
        double logProb,
        int tokens,
        double? rankScore = null)
    {
        ArgumentNullException.ThrowIfNull(questionId);
        ArgumentNullException.ThrowIfNull(subject);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        string? answer = TaskAnswers.Extract(task, text);
        return new Candidate(questionId, subject, index, text, answer, TaskAnswers.IsCorrect(task, answer, referenceAnswer), logProb, tokens, rankScore);
    }
}

/// <summary>Which benchmark's answer format and checker apply.</summary>
public enum AnswerTask
{
    /// <summary>MATH: last <c>\boxed{}</c> content, compared with <see cref="MathChecker.IsEquiv"/>.</summary>
    Math,

    /// <summary>GSM8K: numeric answer, compared with <see cref="Gsm8kChecker.IsEquiv"/>.</summary>
    Gsm8k,
}
