using System.Text;

namespace NegDistill.Data;

/// <summary>
/// The MATH benchmark's answer checker, ported behaviour-for-behaviour from the reference
/// implementation of Hendrycks et al. (2021), repository hendrycks/math:
/// <c>modeling/math_equivalence.py</c> (<c>is_equiv</c>, <c>_strip_string</c>, <c>_fix_fracs</c>,
/// <c>_fix_a_slash_b</c>, <c>_fix_sqrt</c>, <c>_remove_right_units</c>),
/// <c>modeling/dataset/util.py</c> (<c>last_boxed_only_string</c>) and
/// <c>modeling/eval_math_gpt.py</c> (<c>remove_boxed</c>).
/// </summary>
/// <remarks>
/// <para>The reference's quirks are kept on purpose, because the D_pos / D_neg split of the paper was
/// made with it:</para>
/// <list type="bullet">
/// <item><c>\fbox{..}</c> is found by <see cref="LastBoxedOnlyString"/> (only when no <c>\boxed</c>
/// occurs anywhere), but <see cref="RemoveBoxed"/> only accepts the <c>\boxed{</c> prefix, so an
/// fbox answer becomes <c>null</c>.</item>
/// <item>An unbalanced box yields <c>null</c>; <c>null</c> against an answer is unequal and
/// <c>null</c> against <c>null</c> is equal.</item>
/// <item>Where the Python normalisation raises (an <c>IndexError</c> on <c>\frac</c> or
/// <c>\sqrt</c> at the very end of the string, an <c>AssertionError</c> when <c>"\text{ "</c> occurs
/// twice), <see cref="IsEquiv"/> falls back to comparing the raw strings.</item>
/// <item>Only an escaped <c>\%</c> is removed (the reference's second percent step is "\%" again,
/// not "%"), and that removal runs twice.</item>
/// </list>
/// <para>Python indexes strings by code point, .NET by UTF-16 unit; every place where the reference
/// takes <c>s[0]</c>, <c>s[1]</c>, <c>s[2:]</c> or <c>len(s)</c> is done here on code points
/// (<see cref="Rune"/>) so astral characters behave as they do in Python. All searches and
/// replacements are ordinal, like Python's <c>str</c> methods.</para>
/// </remarks>
public static class MathChecker
{
    private const string BoxedOpen = "\\boxed{";

    /// <summary>
    /// <c>last_boxed_only_string</c>: the last <c>\boxed</c> (or, when there is no <c>\boxed</c> at
    /// all, the last <c>\fbox</c>) together with its brace group, e.g. <c>\boxed{\frac{1}{2}}</c>;
    /// <c>null</c> when there is none or its braces never balance.
    /// </summary>
    public static string? LastBoxedOnlyString(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int idx = text.LastIndexOf("\\boxed", StringComparison.Ordinal);
        if (idx < 0)
        {
            idx = text.LastIndexOf("\\fbox", StringComparison.Ordinal);
            if (idx < 0)
            {
                return null;
            }
        }

        // The reference counts braces from the start of the command; a '}' seen before any '{'
        // drives the counter negative, and only a return to exactly zero on a '}' closes the box.
        int open = 0;
        for (int i = idx; i < text.Length; i++)
        {
            char c = text[i];
            if (c == '{')
            {
                open++;
            }
            else if (c == '}')
            {
                open--;
                if (open == 0)
                {
                    return text.Substring(idx, i - idx + 1);
                }
            }
        }

        return null;
    }

    /// <summary>
    /// <c>remove_boxed</c>: the content of <c>\boxed{...}</c>, or <c>null</c> when the string is
    /// <c>null</c>, does not start with <c>\boxed{</c> (e.g. an <c>\fbox{..}</c>) or does not end with
    /// <c>}</c>.
    /// </summary>
    public static string? RemoveBoxed(string? boxed)
    {
        if (boxed is null || !boxed.StartsWith(BoxedOpen, StringComparison.Ordinal) || boxed[^1] != '}')
        {
            return null;
        }

        // Length >= 8 here: the 7-character prefix ends in '{', and the last character is '}'.
        return boxed.Substring(BoxedOpen.Length, boxed.Length - BoxedOpen.Length - 1);
    }

    /// <summary>The final answer of a solution text: <c>remove_boxed(last_boxed_only_string(text))</c>.</summary>
    public static string? ExtractAnswer(string text) => RemoveBoxed(LastBoxedOnlyString(text));

    /// <summary>
    /// <c>is_equiv</c>: true when both are <c>null</c>; false when exactly one is; otherwise the two
    /// normalised strings are compared, or — when normalisation fails as the Python would raise —
    /// the raw strings.
    /// </summary>
    public static bool IsEquiv(string? a, string? b)
    {
        if (a is null && b is null)
        {
            return true;
        }

        if (a is null || b is null)
        {
            return false;
        }

        if (TryStripString(a, out string sa, out _) && TryStripString(b, out string sb, out _))
        {
            return string.Equals(sa, sb, StringComparison.Ordinal);
        }

        return string.Equals(a, b, StringComparison.Ordinal);
    }

    /// <summary>
    /// A reference answer normalised once, for checking many rationales against it; gives exactly
    /// <see cref="IsEquiv"/>(<paramref name="candidate"/>, reference).
    /// </summary>
    public readonly struct AnswerKey
    {
        private readonly bool _stripped;
        private readonly string? _normalized;

        public AnswerKey(string? reference)
        {
            Reference = reference;
            _stripped = reference is not null && TryStripString(reference, out _normalized!, out _);
            if (!_stripped)
            {
                _normalized = null;
            }
        }

        /// <summary>The raw reference answer (null when the reference has no usable box).</summary>
        public string? Reference { get; }

        /// <summary><see cref="IsEquiv"/>(candidate, <see cref="Reference"/>).</summary>
        public bool Matches(string? candidate)
        {
            if (candidate is null || Reference is null)
            {
                return candidate is null && Reference is null;
            }

            if (_stripped && TryStripString(candidate, out string c, out _))
            {
                return string.Equals(c, _normalized, StringComparison.Ordinal);
            }

            return string.Equals(candidate, Reference, StringComparison.Ordinal);
        }
    }

    /// <summary>
    /// The MATH correctness test used for the split: the last boxed answer of the rationale against
    /// the last boxed answer of the reference solution, compared with <see cref="IsEquiv"/>.
    /// </summary>
    public static bool IsCorrect(string rationale, string referenceSolution) =>
        IsEquiv(ExtractAnswer(rationale), ExtractAnswer(referenceSolution));

    /// <summary>
    /// <c>_strip_string</c>. Throws <see cref="MathNormalizationException"/> exactly where the Python
    /// raises (see <see cref="FixFracs"/>, <see cref="FixSqrt"/>, <see cref="RemoveRightUnits"/>).
    /// </summary>
    public static string StripString(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TryStripString(text, out string result, out string? error)
            ? result
            : throw new MathNormalizationException(error!);
    }

    /// <summary>Non-throwing form of <see cref="StripString"/>; <paramref name="error"/> says which step failed.</summary>
    public static bool TryStripString(string text, out string result, out string? error)
    {
        ArgumentNullException.ThrowIfNull(text);
        string s = text;

        s = s.Replace("\n", "", StringComparison.Ordinal);       // line breaks
        s = s.Replace("\\!", "", StringComparison.Ordinal);      // inverse spaces
        s = s.Replace("\\\\", "\\", StringComparison.Ordinal);   // double backslash -> single
        s = s.Replace("tfrac", "frac", StringComparison.Ordinal);
        s = s.Replace("dfrac", "frac", StringComparison.Ordinal);
        s = s.Replace("\\left", "", StringComparison.Ordinal);
        s = s.Replace("\\right", "", StringComparison.Ordinal);
        s = s.Replace("^{\\circ}", "", StringComparison.Ordinal); // degrees
        s = s.Replace("^\\circ", "", StringComparison.Ordinal);
        s = s.Replace("\\$", "", StringComparison.Ordinal);       // dollar signs

        if (!TryRemoveRightUnits(s, out s, out error))
        {
            result = text;
            return false;
        }

        // Percentages: the reference (main branch) writes this step twice, as "\\%" and as "\%";
        // in Python both spell backslash + percent, so a bare "%" is NOT removed ("10%" != "10",
        // while "10\%" == "10"). An unmerged 2024 pull request changes the second to "%"; the
        // paper's split predates it, so it is not followed here. Running the same replacement twice
        // is not a no-op: "\\%%" -> "\%" -> "".
        s = s.Replace("\\%", "", StringComparison.Ordinal);
        s = s.Replace("\\%", "", StringComparison.Ordinal);

        // " ." -> " 0." and "{." -> "{0."; a leading "." gets a "0" (checked before the "=" rule,
        // so "x=.5" keeps its bare ".5" — a quirk of the reference).
        s = s.Replace(" .", " 0.", StringComparison.Ordinal);
        s = s.Replace("{.", "{0.", StringComparison.Ordinal);
        if (s.Length == 0)
        {
            result = s;
            error = null;
            return true;
        }

        if (s[0] == '.')
        {
            s = "0" + s;
        }

        // "k = 5" -> " 5": when there is exactly one '=' and the left side is at most two code
        // points long (spaces included: "x = 1" keeps its "x " left side of length 2).
        string[] eq = s.Split('=');
        if (eq.Length == 2 && CodePointCount(eq[0]) <= 2)
        {
            s = eq[1];
        }

        if (!TryFixSqrt(s, out s, out error))
        {
            result = text;
            return false;
        }

        s = s.Replace(" ", "", StringComparison.Ordinal);

        if (!TryFixFracs(s, out s, out error))
        {
            result = text;
            return false;
        }

        if (s == "0.5")
        {
            s = "\\frac{1}{2}";
        }

        s = FixASlashB(s);
        result = s;
        error = null;
        return true;
    }

    /// <summary>
    /// <c>_fix_fracs</c>: <c>\frac12</c> → <c>\frac{1}{2}</c>, <c>\frac1b</c> → <c>\frac{1}{b}</c>,
    /// <c>\frac1{72}</c> → <c>\frac{1}{72}</c> (but <c>\frac{72}1</c> is left alone). When a
    /// <c>\frac</c> is followed by a single code point the whole input is returned unchanged; when it
    /// ends the string the Python raises <c>IndexError</c>, reported here as
    /// <see cref="MathNormalizationException"/>.
    /// </summary>
    public static string FixFracs(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TryFixFracs(text, out string r, out string? error) ? r : throw new MathNormalizationException(error!);
    }

    /// <summary>
    /// <c>_fix_a_slash_b</c>: <c>a/b</c> → <c>\frac{a}{b}</c> only when the string is exactly two
    /// Python integers in canonical form around a single '/' (so <c>3/4</c> and <c>-3/4</c> convert,
    /// <c>03/4</c>, <c>+3/4</c>, <c>x/4</c>, <c>1.5/2</c> do not).
    /// </summary>
    /// <remarks>The reference checks <c>s == "{}/{}".format(int(a), int(b))</c>, which holds exactly
    /// when each side is <c>-?(0|[1-9][0-9]*)</c> and not <c>-0</c> (Python's <c>int()</c> accepts
    /// "+3", " 3", "0_3" or non-ASCII digits, but their re-formatting differs, so they fail the
    /// assertion). Python 3.11+'s 4,300-digit limit on <c>int()</c> is a runtime guard, not part of
    /// the reference, and is not reproduced.</remarks>
    public static string FixASlashB(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int slash = text.IndexOf('/');
        if (slash < 0 || text.IndexOf('/', slash + 1) >= 0)
        {
            return text;
        }

        ReadOnlySpan<char> a = text.AsSpan(0, slash);
        ReadOnlySpan<char> b = text.AsSpan(slash + 1);
        if (IsCanonicalInteger(a) && IsCanonicalInteger(b))
        {
            return "\\frac{" + a.ToString() + "}{" + b.ToString() + "}";
        }

        return text;
    }

    /// <summary>
    /// <c>_remove_right_units</c>: everything before <c>"\text{ "</c> (with the space) when it occurs
    /// once; the Python asserts it occurs at most once, so a second occurrence throws
    /// <see cref="MathNormalizationException"/>.
    /// </summary>
    public static string RemoveRightUnits(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TryRemoveRightUnits(text, out string r, out string? error) ? r : throw new MathNormalizationException(error!);
    }

    /// <summary>
    /// <c>_fix_sqrt</c>: <c>\sqrt3</c> → <c>\sqrt{3}</c> (one code point is wrapped). A <c>\sqrt</c> at
    /// the very end, or two in a row, is an <c>IndexError</c> in the Python:
    /// <see cref="MathNormalizationException"/>.
    /// </summary>
    public static string FixSqrt(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TryFixSqrt(text, out string r, out string? error) ? r : throw new MathNormalizationException(error!);
    }

    private static bool TryRemoveRightUnits(string s, out string result, out string? error)
    {
        const string marker = "\\text{ ";
        if (!s.Contains(marker, StringComparison.Ordinal))
        {
            result = s;
            error = null;
            return true;
        }

        string[] parts = s.Split(marker);
        if (parts.Length != 2)
        {
            result = s;
            error = $"_remove_right_units: \"\\text{{ \" occurs {parts.Length - 1} times (AssertionError in the reference)";
            return false;
        }

        result = parts[0];
        error = null;
        return true;
    }

    private static bool TryFixSqrt(string s, out string result, out string? error)
    {
        const string sqrt = "\\sqrt";
        if (!s.Contains(sqrt, StringComparison.Ordinal))
        {
            result = s;
            error = null;
            return true;
        }

        string[] parts = s.Split(sqrt);
        var sb = new StringBuilder(s.Length + 8);
        sb.Append(parts[0]);
        for (int k = 1; k < parts.Length; k++)
        {
            string part = parts[k];
            if (part.Length == 0)
            {
                result = s;
                error = "_fix_sqrt: \\sqrt with nothing after it (IndexError in the reference)";
                return false;
            }

            int first = FirstCodePointLength(part);
            if (part[0] != '{')
            {
                sb.Append("\\sqrt{").Append(part, 0, first).Append('}').Append(part, first, part.Length - first);
            }
            else
            {
                sb.Append(sqrt).Append(part);
            }
        }

        result = sb.ToString();
        error = null;
        return true;
    }

    private static bool TryFixFracs(string s, out string result, out string? error)
    {
        const string frac = "\\frac";
        string[] parts = s.Split(frac);
        if (parts.Length == 1)
        {
            result = s;
            error = null;
            return true;
        }

        var sb = new StringBuilder(s.Length + 16);
        sb.Append(parts[0]);
        for (int k = 1; k < parts.Length; k++)
        {
            string part = parts[k];
            sb.Append(frac);
            if (part.Length == 0)
            {
                result = s;
                error = "_fix_fracs: \\frac with nothing after it (IndexError in the reference)";
                return false;
            }

            if (part[0] == '{')
            {
                sb.Append(part);
                continue;
            }

            int aLen = FirstCodePointLength(part);
            if (aLen >= part.Length)
            {
                // Fewer than two code points after \frac: the reference gives up and returns its
                // input unchanged (not a partial result).
                result = s;
                error = null;
                return true;
            }

            int bLen = FirstCodePointLength(part.AsSpan(aLen));
            ReadOnlySpan<char> a = part.AsSpan(0, aLen);
            ReadOnlySpan<char> b = part.AsSpan(aLen, bLen);
            ReadOnlySpan<char> post = part.AsSpan(aLen + bLen);
            sb.Append('{').Append(a).Append('}');
            if (b is not "{")
            {
                sb.Append('{').Append(b).Append('}');
            }
            else
            {
                sb.Append(b);
            }

            sb.Append(post);
        }

        result = sb.ToString();
        error = null;
        return true;
    }

    private static bool IsCanonicalInteger(ReadOnlySpan<char> s)
    {
        if (s.Length > 0 && s[0] == '-')
        {
            s = s[1..];
            if (s is "0")
            {
                return false; // int("-0") formats as "0"
            }
        }

        if (s.Length == 0 || (s[0] == '0' && s.Length > 1))
        {
            return false;
        }

        foreach (char c in s)
        {
            if (c is < '0' or > '9')
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>UTF-16 length of the first code point (a lone surrogate counts as one, as in Python).</summary>
    private static int FirstCodePointLength(ReadOnlySpan<char> s) =>
        s.Length >= 2 && char.IsHighSurrogate(s[0]) && char.IsLowSurrogate(s[1]) ? 2 : 1;

    /// <summary>Python's <c>len()</c>: the number of code points (lone surrogates count one each).</summary>
    public static int CodePointCount(ReadOnlySpan<char> s)
    {
        int n = s.Length;
        for (int i = 0; i + 1 < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && char.IsLowSurrogate(s[i + 1]))
            {
                n--;
                i++;
            }
        }

        return n;
    }
}

/// <summary>Raised where the reference's Python normalisation raises (IndexError / AssertionError).</summary>
public sealed class MathNormalizationException : Exception
{
    public MathNormalizationException(string message) : base(message)
    {
    }
}
