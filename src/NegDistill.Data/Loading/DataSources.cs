using System.Text;
using System.Text.RegularExpressions;

namespace NegDistill.Data;

/// <summary>
/// Turns "a file, a folder tree, or a glob" into an ordered list of files. Folders are searched
/// recursively for the given extensions; globs support <c>*</c>, <c>?</c>, <c>[abc]</c> and
/// <c>**</c> (any number of folders). The order is deterministic: paths are compared segment by
/// segment with digit runs compared as numbers (so <c>2.jsonl</c> precedes <c>10.jsonl</c>).
/// </summary>
public static class DataSources
{
    /// <summary>Resolves <paramref name="pathOrGlob"/>; throws <see cref="FileNotFoundException"/> when it names nothing.</summary>
    /// <param name="pathOrGlob">A file, a folder, or a glob such as <c>data/**/train_*/*.jsonl</c>.</param>
    /// <param name="folderExtensions">Extensions (with dot, e.g. ".jsonl") taken from folders; globs and explicit files are not filtered.</param>
    public static IReadOnlyList<string> Resolve(string pathOrGlob, IReadOnlyCollection<string> folderExtensions)
    {
        ArgumentException.ThrowIfNullOrEmpty(pathOrGlob);
        if (File.Exists(pathOrGlob))
        {
            return [pathOrGlob];
        }

        if (Directory.Exists(pathOrGlob))
        {
            var files = Directory.EnumerateFiles(pathOrGlob, "*", SearchOption.AllDirectories)
                .Where(f => folderExtensions.Any(e => f.EndsWith(e, StringComparison.OrdinalIgnoreCase)))
                .ToList();
            files.Sort(NaturalPathComparer.Instance);
            if (files.Count == 0)
            {
                throw new FileNotFoundException(
                    $"folder '{pathOrGlob}' holds no file ending in {string.Join(" or ", folderExtensions)}", pathOrGlob);
            }

            return files;
        }

        if (pathOrGlob.IndexOfAny(['*', '?', '[']) >= 0)
        {
            var files = ExpandGlob(pathOrGlob);
            if (files.Count == 0)
            {
                throw new FileNotFoundException($"glob '{pathOrGlob}' matches no file", pathOrGlob);
            }

            return files;
        }

        throw new FileNotFoundException($"no file, folder or glob match: '{pathOrGlob}'", pathOrGlob);
    }

    /// <summary>Files matching a glob, in natural order (empty when none).</summary>
    public static List<string> ExpandGlob(string glob)
    {
        string normalized = glob.Replace('\\', '/');
        string[] segments = normalized.Split('/');
        int firstWild = Array.FindIndex(segments, s => s.IndexOfAny(['*', '?', '[']) >= 0);
        string baseDir = firstWild <= 0
            ? (normalized.StartsWith('/') ? "/" : ".")
            : string.Join('/', segments, 0, firstWild);
        if (baseDir.Length == 0)
        {
            baseDir = "/";
        }

        string pattern = string.Join('/', segments, Math.Max(firstWild, 0), segments.Length - Math.Max(firstWild, 0));
        if (!Directory.Exists(baseDir))
        {
            return [];
        }

        Regex regex = GlobToRegex(pattern);
        bool recursive = pattern.Contains("**", StringComparison.Ordinal) || pattern.Contains('/');
        var result = new List<string>();
        foreach (string file in Directory.EnumerateFiles(baseDir, "*", recursive ? SearchOption.AllDirectories : SearchOption.TopDirectoryOnly))
        {
            string rel = Path.GetRelativePath(baseDir, file).Replace('\\', '/');
            if (regex.IsMatch(rel))
            {
                result.Add(baseDir == "." ? rel : file);
            }
        }

        result.Sort(NaturalPathComparer.Instance);
        return result;
    }

    /// <summary>Glob (relative, '/'-separated) to an anchored regex.</summary>
    public static Regex GlobToRegex(string pattern)
    {
        var sb = new StringBuilder("^");
        for (int i = 0; i < pattern.Length; i++)
        {
            char c = pattern[i];
            switch (c)
            {
                case '*' when i + 1 < pattern.Length && pattern[i + 1] == '*':
                    bool slashAfter = i + 2 < pattern.Length && pattern[i + 2] == '/';
                    sb.Append(slashAfter ? "(?:.*/)?" : ".*");
                    i += slashAfter ? 2 : 1;
                    break;
                case '*':
                    sb.Append("[^/]*");
                    break;
                case '?':
                    sb.Append("[^/]");
                    break;
                case '[':
                    int close = pattern.IndexOf(']', i + 1);
                    if (close < 0)
                    {
                        sb.Append(@"\[");
                    }
                    else
                    {
                        string body = pattern.Substring(i + 1, close - i - 1);
                        if (body.StartsWith('!'))
                        {
                            body = "^" + body[1..];
                        }

                        sb.Append('[').Append(body.Replace("\\", "\\\\", StringComparison.Ordinal)).Append(']');
                        i = close;
                    }

                    break;
                default:
                    sb.Append(Regex.Escape(c.ToString()));
                    break;
            }
        }

        sb.Append('$');
        return new Regex(sb.ToString(), RegexOptions.CultureInvariant);
    }
}

/// <summary>Orders paths segment by segment, comparing runs of ASCII digits by value, otherwise ordinally.</summary>
public sealed class NaturalPathComparer : IComparer<string>
{
    public static readonly NaturalPathComparer Instance = new();

    public int Compare(string? x, string? y)
    {
        if (ReferenceEquals(x, y))
        {
            return 0;
        }

        if (x is null)
        {
            return -1;
        }

        if (y is null)
        {
            return 1;
        }

        int i = 0, j = 0;
        while (i < x.Length && j < y.Length)
        {
            char a = x[i], b = y[j];
            if (char.IsAsciiDigit(a) && char.IsAsciiDigit(b))
            {
                int si = i, sj = j;
                while (i < x.Length && char.IsAsciiDigit(x[i])) i++;
                while (j < y.Length && char.IsAsciiDigit(y[j])) j++;
                ReadOnlySpan<char> na = x.AsSpan(si, i - si).TrimStart('0');
                ReadOnlySpan<char> nb = y.AsSpan(sj, j - sj).TrimStart('0');
                if (na.Length != nb.Length)
                {
                    return na.Length.CompareTo(nb.Length);
                }

                int c = na.SequenceCompareTo(nb);
                if (c != 0)
                {
                    return c;
                }

                continue;
            }

            // Path separators sort before any other character so "a/b" precedes "a-b".
            int ka = a is '/' or '\\' ? -1 : a;
            int kb = b is '/' or '\\' ? -1 : b;
            if (ka != kb)
            {
                return ka.CompareTo(kb);
            }

            i++;
            j++;
        }

        int rest = (x.Length - i).CompareTo(y.Length - j);
        return rest != 0 ? rest : string.CompareOrdinal(x, y);
    }
}
