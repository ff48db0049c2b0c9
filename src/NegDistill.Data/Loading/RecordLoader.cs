using System.Text.Json;

namespace NegDistill.Data;

/// <summary>
/// Base of the streaming JSON loaders. Files ending in <c>.json</c> hold one JSON object; any other
/// file (<c>.jsonl</c>, <c>.ndjson</c>, ...) holds one JSON object per line. Records are produced one at
/// a time as the caller enumerates; only the current line is parsed and held.
/// </summary>
/// <typeparam name="T">The record type.</typeparam>
public abstract class RecordLoader<T>
    where T : class
{
    private static readonly JsonDocumentOptions JsonOptions = new() { MaxDepth = 64 };

    protected RecordLoader(MalformedPolicy policy)
    {
        Policy = policy;
    }

    /// <summary>Skip (and report) or stop on malformed input.</summary>
    public MalformedPolicy Policy { get; }

    /// <summary>Running counts for everything this loader has read so far.</summary>
    public LoadReport Report { get; } = new();

    /// <summary>Extensions (with dot) picked up when a folder is given.</summary>
    protected abstract IReadOnlyCollection<string> FolderExtensions { get; }

    /// <summary>Streams the records of a file, a folder tree (recursively) or a glob.</summary>
    public IEnumerable<T> Load(string pathOrGlob)
    {
        IReadOnlyList<string> files = DataSources.Resolve(pathOrGlob, FolderExtensions);
        return LoadFiles(files);
    }

    /// <summary>Streams the records of the given files, in order.</summary>
    public IEnumerable<T> LoadFiles(IEnumerable<string> files)
    {
        foreach (string file in files)
        {
            foreach (T record in LoadFile(file))
            {
                yield return record;
            }
        }
    }

    /// <summary>Streams the records of one file.</summary>
    public IEnumerable<T> LoadFile(string file)
    {
        ArgumentException.ThrowIfNullOrEmpty(file);
        return file.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? LoadDocument(file) : LoadLines(file);
    }

    /// <summary>
    /// Builds a record from a parsed JSON value. Throw <see cref="RecordFormatException"/> for a record
    /// that cannot be used; call <see cref="ReportPartial"/> for a problem that loses only part of it.
    /// </summary>
    protected abstract T Parse(JsonElement root, string file, long line);

    /// <summary>Reports a problem that does not drop the record (e.g. one invalid rationale). Throws under <see cref="MalformedPolicy.Stop"/>.</summary>
    protected void ReportPartial(string file, long line, string reason, int rationales)
    {
        var entry = new MalformedEntry(file, line, reason, rationales, RecordSkipped: false);
        Report.Add(entry);
        if (Policy == MalformedPolicy.Stop)
        {
            throw new MalformedRecordException(entry);
        }
    }

    private IEnumerable<T> LoadLines(string file)
    {
        using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        Report.Files++;
        foreach ((long line, ReadOnlyMemory<byte> bytes) in JsonLineReader.ReadLines(stream))
        {
            Report.Lines++;
            Report.Bytes += bytes.Length + 1;
            if (JsonLineReader.IsBlank(bytes.Span))
            {
                Report.BlankLines++;
                continue;
            }

            T? record = ParseBytes(bytes, file, line, lineOffset: 0);
            if (record is not null)
            {
                Report.Records++;
                yield return record;
            }
        }
    }

    private IEnumerable<T> LoadDocument(string file)
    {
        byte[] bytes = File.ReadAllBytes(file);
        Report.Files++;
        Report.Lines++;
        Report.Bytes += bytes.Length;
        ReadOnlyMemory<byte> memory = bytes;
        if (bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF)
        {
            memory = memory[3..];
        }

        T? record = ParseBytes(memory, file, 1, lineOffset: 1);
        if (record is not null)
        {
            Report.Records++;
            yield return record;
        }
    }

    /// <param name="lineOffset">1 when JSON error positions should be used as the line (whole-file documents), 0 for JSONL lines.</param>
    private T? ParseBytes(ReadOnlyMemory<byte> bytes, string file, long line, int lineOffset)
    {
        // JsonDocument defers UTF-8 validation of string values to GetString(); check up front so a
        // bad byte is reported with its position instead of failing later (or being replaced).
        if (!System.Text.Unicode.Utf8.IsValid(bytes.Span))
        {
            System.Text.Unicode.Utf8.ToUtf16(bytes.Span, new char[bytes.Length], out int valid, out _, replaceInvalidSequences: false);
            Fail(file, line, $"invalid UTF-8 at byte {valid} of the {(lineOffset == 1 ? "file" : "line")}", 0, null);
            return null;
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(bytes, JsonOptions);
        }
        catch (JsonException ex)
        {
            long where = lineOffset == 1 && ex.LineNumber is long ln ? ln + 1 : line;
            Fail(file, where, "invalid JSON: " + ex.Message, 0, ex);
            return null;
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                Fail(file, line, $"expected a JSON object, found {doc.RootElement.ValueKind}", 0, null);
                return null;
            }

            try
            {
                return Parse(doc.RootElement, file, line);
            }
            catch (RecordFormatException ex)
            {
                Fail(file, line, ex.Message, ex.RationalesLost, ex);
                return null;
            }
        }
    }

    private void Fail(string file, long line, string reason, int rationales, Exception? inner)
    {
        var entry = new MalformedEntry(file, line, reason, rationales, RecordSkipped: true);
        Report.Add(entry);
        if (Policy == MalformedPolicy.Stop)
        {
            throw new MalformedRecordException(entry, inner);
        }
    }

    /// <summary>A required string property; throws <see cref="RecordFormatException"/> when it is missing or not a string.</summary>
    protected static string RequireString(JsonElement root, string name, int rationalesLost = 0)
    {
        if (!root.TryGetProperty(name, out JsonElement v))
        {
            throw new RecordFormatException($"missing field '{name}'", rationalesLost);
        }

        return v.ValueKind == JsonValueKind.String
            ? v.GetString()!
            : throw new RecordFormatException($"field '{name}' must be a string, found {v.ValueKind}", rationalesLost);
    }

    /// <summary>An optional string property (absent or null gives null); any other kind throws.</summary>
    protected static string? OptionalString(JsonElement root, string name, int rationalesLost = 0)
    {
        if (!root.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        return v.ValueKind == JsonValueKind.String
            ? v.GetString()!
            : throw new RecordFormatException($"field '{name}' must be a string, found {v.ValueKind}", rationalesLost);
    }

    /// <summary>
    /// A MATH difficulty level: a string ("Level 3", "Level ?") or an integer (3 → "Level 3", as some
    /// MATH JSONL exports store it); absent or null gives null.
    /// </summary>
    protected static string? OptionalLevel(JsonElement root, string name, int rationalesLost = 0)
    {
        if (!root.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString()!,
            JsonValueKind.Number when v.TryGetInt32(out int n) => $"Level {n}",
            _ => throw new RecordFormatException($"field '{name}' must be a string or an integer, found {v.ValueKind}", rationalesLost),
        };
    }
}

/// <summary>Thrown by a loader's parser for a record it cannot use; turned into a <see cref="MalformedEntry"/>.</summary>
public sealed class RecordFormatException : Exception
{
    public RecordFormatException(string message, int rationalesLost = 0) : base(message)
    {
        RationalesLost = rationalesLost;
    }

    /// <summary>Rationales lost with the record, when known.</summary>
    public int RationalesLost { get; }
}
