namespace NegDistill.Data;

/// <summary>The seven MATH subjects, and the mapping from the names data files use to canonical names.</summary>
public static class MathSubjects
{
    /// <summary>Placeholder for a missing subject or level field.</summary>
    public const string Missing = "(missing)";

    /// <summary>Canonical names, in the order MATH lists them.</summary>
    public static readonly IReadOnlyList<string> All =
    [
        "algebra",
        "counting_and_probability",
        "geometry",
        "intermediate_algebra",
        "number_theory",
        "prealgebra",
        "precalculus",
    ];

    private static readonly Dictionary<string, string> Aliases = new(StringComparer.OrdinalIgnoreCase)
    {
        ["Algebra"] = "algebra",
        ["Counting & Probability"] = "counting_and_probability",
        ["Counting and Probability"] = "counting_and_probability",
        ["Geometry"] = "geometry",
        ["Intermediate Algebra"] = "intermediate_algebra",
        ["Number Theory"] = "number_theory",
        ["Prealgebra"] = "prealgebra",
        ["Precalculus"] = "precalculus",
        ["algebra"] = "algebra",
        ["counting_and_probability"] = "counting_and_probability",
        ["geometry"] = "geometry",
        ["intermediate_algebra"] = "intermediate_algebra",
        ["number_theory"] = "number_theory",
        ["prealgebra"] = "prealgebra",
        ["precalculus"] = "precalculus",
    };

    /// <summary>True for a known display or canonical name.</summary>
    public static bool IsKnown(string name) => Aliases.ContainsKey(name.Trim());

    /// <summary>
    /// "Counting &amp; Probability" → "counting_and_probability", etc.; an unknown name is lower-cased
    /// with "&amp;" → "and" and spaces → "_"; <see cref="Missing"/> stays as it is.
    /// </summary>
    public static string Canonical(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        string t = name.Trim();
        if (t == Missing)
        {
            return Missing;
        }

        if (Aliases.TryGetValue(t, out string? c))
        {
            return c;
        }

        return t.ToLowerInvariant().Replace("&", "and", StringComparison.Ordinal).Replace(' ', '_').Replace("__", "_", StringComparison.Ordinal);
    }

    /// <summary>Sort key: the seven subjects in MATH order first, then others ordinally.</summary>
    public static int Order(string canonical)
    {
        int i = -1;
        for (int k = 0; k < All.Count; k++)
        {
            if (All[k] == canonical)
            {
                i = k;
                break;
            }
        }

        return i >= 0 ? i : All.Count;
    }
}
