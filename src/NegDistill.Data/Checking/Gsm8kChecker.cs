using System.Globalization;
using System.Text.RegularExpressions;

namespace NegDistill.Data;

/// <summary>
/// Answer checking for GSM8K (Cobbe et al. 2021), the paper's generalisation set. A reference
/// solution ends with <c>#### 72</c>; the final answer is the text after the last <c>####</c> with
/// thousands separators removed. A model's output is read, in this order, from a <c>####</c> marker
/// if it wrote one, from its last <c>\boxed{..}</c> (MATH style), or else from the last number in the
/// text. Two answers are equal when both parse as numbers with the same value (so <c>18</c>,
/// <c>18.0</c> and <c>$18.00</c> agree), otherwise when their normalised texts are identical.
/// </summary>
public static partial class Gsm8kChecker
{
    /// <summary>The marker before GSM8K's final answer.</summary>
    public const string FinalAnswerMarker = "####";

    [GeneratedRegex(@"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*-?\d+)?", RegexOptions.CultureInvariant)]
    private static partial Regex NumberRegex();

    /// <summary>
    /// The final answer of a GSM8K reference solution: the text after the last <c>####</c>, trimmed,
    /// commas removed; <c>null</c> when there is no marker or nothing after it.
    /// </summary>
    public static string? ExtractReferenceAnswer(string solution)
    {
        ArgumentNullException.ThrowIfNull(solution);
        int idx = solution.LastIndexOf(FinalAnswerMarker, StringComparison.Ordinal);
        if (idx < 0)
        {
            return null;
        }

        string tail = Normalize(solution[(idx + FinalAnswerMarker.Length)..]);
        return tail.Length == 0 ? null : tail;
    }

    /// <summary>
    /// The answer a model gave: after its last <c>####</c> if present (the first number there, or the
    /// whole normalised tail if it has none), else the content of its last <c>\boxed{..}</c>, else the
    /// last number anywhere in the text; <c>null</c> when none of these exists.
    /// </summary>
    public static string? ExtractPredictedAnswer(string output)
    {
        ArgumentNullException.ThrowIfNull(output);
        int idx = output.LastIndexOf(FinalAnswerMarker, StringComparison.Ordinal);
        if (idx >= 0)
        {
            string tail = output[(idx + FinalAnswerMarker.Length)..];
            Match first = NumberRegex().Match(tail);
            if (first.Success)
            {
                return Normalize(first.Value);
            }

            string t = Normalize(tail);
            if (t.Length > 0)
            {
                return t;
            }
        }

        string? boxed = MathChecker.ExtractAnswer(output);
        if (boxed is not null)
        {
            return Normalize(boxed);
        }

        Match? last = null;
        foreach (Match m in NumberRegex().Matches(output))
        {
            last = m;
        }

        return last is null ? null : Normalize(last.Value);
    }

    /// <summary>
    /// Normalises an answer string: trims whitespace, removes thousands commas, a leading <c>$</c> or
    /// <c>\$</c>, a trailing full stop, and the LaTeX <c>\!</c> / <c>{,}</c> separators.
    /// </summary>
    public static string Normalize(string answer)
    {
        ArgumentNullException.ThrowIfNull(answer);
        string s = answer.Trim();
        s = s.Replace("{,}", "", StringComparison.Ordinal).Replace("\\!", "", StringComparison.Ordinal);
        s = s.Replace(",", "", StringComparison.Ordinal);
        s = s.Replace("\\$", "", StringComparison.Ordinal).Replace("$", "", StringComparison.Ordinal);
        s = s.Trim();
        while (s.EndsWith('.'))
        {
            s = s[..^1].TrimEnd();
        }

        return s;
    }

    /// <summary>
    /// Parses a normalised answer as a number: a decimal (<c>-12</c>, <c>3.50</c>, <c>.5</c>) or a
    /// simple fraction of integers (<c>3/4</c>), invariant culture.
    /// </summary>
    public static bool TryParseNumber(string answer, out decimal value)
    {
        ArgumentNullException.ThrowIfNull(answer);
        string s = Normalize(answer).Replace(" ", "", StringComparison.Ordinal);
        const NumberStyles style = NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint;
        int slash = s.IndexOf('/');
        if (slash > 0)
        {
            if (decimal.TryParse(s.AsSpan(0, slash), style, CultureInfo.InvariantCulture, out decimal num)
                && decimal.TryParse(s.AsSpan(slash + 1), style, CultureInfo.InvariantCulture, out decimal den)
                && den != 0m)
            {
                value = num / den;
                return true;
            }

            value = 0m;
            return false;
        }

        return decimal.TryParse(s, style, CultureInfo.InvariantCulture, out value);
    }

    /// <summary>Numeric equality when both parse, else ordinal equality of the normalised texts; <c>null</c> is never equal.</summary>
    public static bool IsEquiv(string? predicted, string? reference)
    {
        if (predicted is null || reference is null)
        {
            return false;
        }

        if (TryParseNumber(predicted, out decimal p) && TryParseNumber(reference, out decimal r))
        {
            return p == r;
        }

        return string.Equals(Normalize(predicted), Normalize(reference), StringComparison.Ordinal);
    }

    /// <summary>Whether a model output answers a GSM8K reference solution correctly.</summary>
    public static bool IsCorrect(string modelOutput, string referenceSolution) =>
        IsEquiv(ExtractPredictedAnswer(modelOutput), ExtractReferenceAnswer(referenceSolution));
}
