using System.Globalization;

namespace NegDistill.Data.Evaluation;

/// <summary>
/// Answer extraction, correctness and the grouping key used by the votes, per task. The key is built
/// so that two non-null answers have equal keys exactly when the task's checker calls them equivalent;
/// grouping by key is therefore the checker's own equivalence, and it is transitive.
/// </summary>
public static class TaskAnswers
{
    /// <summary>The final answer in a model output; <c>null</c> when there is none.</summary>
    public static string? Extract(AnswerTask task, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return task switch
        {
            AnswerTask.Math => MathChecker.ExtractAnswer(text),
            AnswerTask.Gsm8k => Gsm8kChecker.ExtractPredictedAnswer(text),
            _ => throw new ArgumentOutOfRangeException(nameof(task), task, "unknown task"),
        };
    }

    /// <summary>The final answer of a reference solution (MATH: its last boxed content; GSM8K: after <c>####</c>).</summary>
    public static string? ExtractReference(AnswerTask task, string solution)
    {
        ArgumentNullException.ThrowIfNull(solution);
        return task switch
        {
            AnswerTask.Math => MathChecker.ExtractAnswer(solution),
            AnswerTask.Gsm8k => Gsm8kChecker.ExtractReferenceAnswer(solution),
            _ => throw new ArgumentOutOfRangeException(nameof(task), task, "unknown task"),
        };
    }

    /// <summary>
    /// Whether an extracted answer matches the extracted reference under the task's checker. A missing
    /// answer is never correct (the MATH checker's "nothing equals nothing" only matters for the
    /// teacher-data split; a question without a reference answer cannot be scored).
    /// </summary>
    public static bool IsCorrect(AnswerTask task, string? answer, string? reference)
    {
        if (answer is null || reference is null)
        {
            return false;
        }

        return task switch
        {
            AnswerTask.Math => MathChecker.IsEquiv(answer, reference),
            AnswerTask.Gsm8k => Gsm8kChecker.IsEquiv(answer, reference),
            _ => throw new ArgumentOutOfRangeException(nameof(task), task, "unknown task"),
        };
    }

    /// <summary>
    /// The grouping key of a non-null answer.
    /// <para>MATH: <c>"S:" + _strip_string(answer)</c>, or <c>"R:" + answer</c> when the normalisation
    /// raises — the same fallback as <c>is_equiv</c>, which then compares the raw strings. The tag
    /// keeps a raw fallback from ever colliding with a normalised form, so equal keys ⇔
    /// <see cref="MathChecker.IsEquiv"/> (so "0.5", "1/2" and "\dfrac{1}{2}" share a key).</para>
    /// <para>GSM8K: <c>"N:" + value</c> when the answer parses as a number (the decimal value printed
    /// without trailing zeros, so 18, 18.0 and $18.00 agree), else <c>"T:" + normalised text</c>; equal
    /// keys ⇔ <see cref="Gsm8kChecker.IsEquiv"/>.</para>
    /// </summary>
    public static string GroupKey(AnswerTask task, string answer)
    {
        ArgumentNullException.ThrowIfNull(answer);
        switch (task)
        {
            case AnswerTask.Math:
                return MathChecker.TryStripString(answer, out string stripped, out _) ? "S:" + stripped : "R:" + answer;
            case AnswerTask.Gsm8k:
                return Gsm8kChecker.TryParseNumber(answer, out decimal value)
                    ? "N:" + CanonicalDecimal(value)
                    : "T:" + Gsm8kChecker.Normalize(answer);
            default:
                throw new ArgumentOutOfRangeException(nameof(task), task, "unknown task");
        }
    }

    /// <summary>A decimal printed so that equal values give equal text (no trailing zeros, no "-0").</summary>
    private static string CanonicalDecimal(decimal value)
    {
        if (value == 0m)
        {
            return "0";
        }

        string s = value.ToString(CultureInfo.InvariantCulture);
        if (s.Contains('.', StringComparison.Ordinal))
        {
            s = s.TrimEnd('0').TrimEnd('.');
        }

        return s;
    }
}
