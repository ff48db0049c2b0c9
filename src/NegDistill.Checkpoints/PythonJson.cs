using System.Globalization;
using System.Text;
using System.Text.Json;

namespace NegDistill.Checkpoints;

/// <summary>
/// Writes JSON byte-for-byte the way Python's <c>json.dumps(obj, indent=2, sort_keys=True)</c> does, which is how
/// Hugging Face tools write model.safetensors.index.json and adapter_config.json: two-space indent, ", " never used
/// at line ends, ": " between key and value, keys sorted by code point, non-ASCII escaped as lowercase \uXXXX,
/// empty containers as {} and [].
/// Accepted values: null, bool, string, int, long, double (written as Python's float repr), PythonJson.RawNumber,
/// JsonElement (re-emitted in the same style), IReadOnlyDictionary&lt;string, object?&gt; and IEnumerable of values.
/// </summary>
internal static class PythonJson
{
    /// <summary>A number written verbatim (used to keep a number's original spelling).</summary>
    public readonly record struct RawNumber(string Text);

    public static string Serialize(object? value)
    {
        var sb = new StringBuilder();
        WriteValue(sb, value, 0);
        return sb.ToString();
    }

    private static void WriteValue(StringBuilder sb, object? value, int depth)
    {
        switch (value)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case string s: WriteString(sb, s); break;
            case int i: sb.Append(i.ToString(CultureInfo.InvariantCulture)); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(FloatRepr(d)); break;
            case RawNumber n: sb.Append(n.Text); break;
            case JsonElement e: WriteElement(sb, e, depth); break;
            case IReadOnlyDictionary<string, object?> map:
                WriteObject(sb, map.Select(kv => (kv.Key, kv.Value)), depth);
                break;
            case System.Collections.IEnumerable list:
                WriteArray(sb, list.Cast<object?>(), depth);
                break;
            default:
                throw new ArgumentException($"cannot write a {value.GetType().Name} as JSON");
        }
    }

    private static void WriteElement(StringBuilder sb, JsonElement e, int depth)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                WriteObject(sb, e.EnumerateObject().Select(p => (p.Name, (object?)p.Value)), depth);
                break;
            case JsonValueKind.Array:
                WriteArray(sb, e.EnumerateArray().Select(x => (object?)x), depth);
                break;
            case JsonValueKind.String: WriteString(sb, e.GetString()!); break;
            case JsonValueKind.Number: sb.Append(e.GetRawText()); break;
            case JsonValueKind.True: sb.Append("true"); break;
            case JsonValueKind.False: sb.Append("false"); break;
            default: sb.Append("null"); break;
        }
    }

    private static void WriteObject(StringBuilder sb, IEnumerable<(string Key, object? Value)> entries, int depth)
    {
        var sorted = entries.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        if (sorted.Count == 0) { sb.Append("{}"); return; }
        sb.Append('{');
        for (int i = 0; i < sorted.Count; i++)
        {
            sb.Append(i == 0 ? "\n" : ",\n");
            Indent(sb, depth + 1);
            WriteString(sb, sorted[i].Key);
            sb.Append(": ");
            WriteValue(sb, sorted[i].Value, depth + 1);
        }
        sb.Append('\n');
        Indent(sb, depth);
        sb.Append('}');
    }

    private static void WriteArray(StringBuilder sb, IEnumerable<object?> items, int depth)
    {
        var list = items.ToList();
        if (list.Count == 0) { sb.Append("[]"); return; }
        sb.Append('[');
        for (int i = 0; i < list.Count; i++)
        {
            sb.Append(i == 0 ? "\n" : ",\n");
            Indent(sb, depth + 1);
            WriteValue(sb, list[i], depth + 1);
        }
        sb.Append('\n');
        Indent(sb, depth);
        sb.Append(']');
    }

    private static void Indent(StringBuilder sb, int depth) => sb.Append(' ', 2 * depth);

    /// <summary>Python's ensure_ascii escaping: printable ASCII (space to '~') is kept, everything else escaped.</summary>
    public static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c >= ' ' && c <= '~') sb.Append(c);
                    else sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    break;
            }
        }
        sb.Append('"');
    }

    /// <summary>
    /// Python's repr of a float: the shortest text that round-trips, with ".0" on integral values, and exponent
    /// notation (e.g. 1e-05, 1e+16) when the decimal exponent is below -4 or at least 16.
    /// </summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "NaN";
        if (double.IsPositiveInfinity(d)) return "Infinity";
        if (double.IsNegativeInfinity(d)) return "-Infinity";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";

        string shortest = d.ToString("R", CultureInfo.InvariantCulture);
        // Pull the digits and decimal exponent out of the shortest representation.
        string mantissa = shortest;
        int exponent = 0;
        int e = shortest.IndexOfAny(['E', 'e']);
        if (e >= 0)
        {
            mantissa = shortest[..e];
            exponent = int.Parse(shortest[(e + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
        }
        bool negative = mantissa.StartsWith('-');
        if (negative) mantissa = mantissa[1..];
        int dot = mantissa.IndexOf('.');
        string intPart = dot >= 0 ? mantissa[..dot] : mantissa;
        string fracPart = dot >= 0 ? mantissa[(dot + 1)..] : "";
        string digits = (intPart + fracPart).TrimStart('0');
        int leadingZeros = (intPart + fracPart).Length - (intPart + fracPart).TrimStart('0').Length;
        // Decimal exponent of the first significant digit.
        int pointPos = intPart.Length + exponent - leadingZeros; // digits before the decimal point
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        int decimalExponent = pointPos - 1;

        var sb = new StringBuilder();
        if (negative) sb.Append('-');
        if (decimalExponent < -4 || decimalExponent >= 16)
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            sb.Append('e').Append(decimalExponent < 0 ? '-' : '+');
            sb.Append(Math.Abs(decimalExponent).ToString("00", CultureInfo.InvariantCulture));
        }
        else if (pointPos <= 0)
        {
            sb.Append("0.").Append('0', -pointPos).Append(digits);
        }
        else if (pointPos >= digits.Length)
        {
            sb.Append(digits).Append('0', pointPos - digits.Length).Append(".0");
        }
        else
        {
            sb.Append(digits, 0, pointPos).Append('.').Append(digits, pointPos, digits.Length - pointPos);
        }
        return sb.ToString();
    }
}
