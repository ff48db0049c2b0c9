using System.Buffers;
using System.Text;
using System.Text.Json;

namespace NegDistill.Data.Evaluation;

/// <summary>
/// The candidate file: one JSON object per line,
/// <c>{"question_id":..,"subject":..,"index":..,"text":..,"answer":..|null,"correct":..,"log_prob":..,"tokens":..,"rank_score":..|null}</c>.
/// Lines are appended and flushed one at a time, so a sampling run that is killed keeps every candidate
/// it finished; at worst the last line is cut short, and <see cref="Read"/> drops (and reports) that line
/// while <see cref="CandidateJsonlWriter.Open"/> trims it away before appending more.
/// </summary>
public static class CandidateJsonl
{
    internal const string QuestionIdField = "question_id";
    internal const string SubjectField = "subject";
    internal const string IndexField = "index";
    internal const string TextField = "text";
    internal const string AnswerField = "answer";
    internal const string CorrectField = "correct";
    internal const string LogProbField = "log_prob";
    internal const string TokensField = "tokens";
    internal const string RankScoreField = "rank_score";

    private static readonly JsonWriterOptions WriterOptions = new()
    {
        // Keep the file readable (no \u-escaping of non-ASCII or '+'); JSON stays valid.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Indented = false,
    };

    /// <summary>One candidate as a JSON line, without the line terminator, UTF-8.</summary>
    public static byte[] Serialize(Candidate candidate)
    {
        ArgumentNullException.ThrowIfNull(candidate);
        var buffer = new ArrayBufferWriter<byte>(256 + candidate.Text.Length);
        using (var w = new Utf8JsonWriter(buffer, WriterOptions))
        {
            w.WriteStartObject();
            w.WriteString(QuestionIdField, candidate.QuestionId);
            w.WriteString(SubjectField, candidate.Subject);
            w.WriteNumber(IndexField, candidate.Index);
            w.WriteString(TextField, candidate.Text);
            if (candidate.Answer is null)
            {
                w.WriteNull(AnswerField);
            }
            else
            {
                w.WriteString(AnswerField, candidate.Answer);
            }

            w.WriteBoolean(CorrectField, candidate.Correct);
            WriteDouble(w, LogProbField, candidate.LogProb);
            w.WriteNumber(TokensField, candidate.Tokens);
            if (candidate.RankScore is { } r)
            {
                WriteDouble(w, RankScoreField, r);
            }
            else
            {
                w.WriteNull(RankScoreField);
            }

            w.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Parses one JSON line; throws <see cref="FormatException"/> naming what is wrong.</summary>
    public static Candidate Parse(ReadOnlySpan<byte> line)
    {
        JsonDocument doc;
        try
        {
            var reader = new Utf8JsonReader(line, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow });
            doc = JsonDocument.ParseValue(ref reader);
            if (reader.BytesConsumed != line.Length && line[(int)reader.BytesConsumed..].IndexOfAnyExcept(" \t\r"u8) >= 0)
            {
                doc.Dispose();
                throw new FormatException("text after the JSON object");
            }
        }
        catch (JsonException e)
        {
            throw new FormatException("invalid JSON: " + e.Message, e);
        }

        using (doc)
        {
            JsonElement root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new FormatException("a candidate line must be a JSON object, got " + root.ValueKind);
            }

            return new Candidate(
                RequiredString(root, QuestionIdField),
                RequiredString(root, SubjectField),
                RequiredInt(root, IndexField),
                RequiredString(root, TextField),
                OptionalString(root, AnswerField),
                RequiredBool(root, CorrectField),
                ReadDouble(Required(root, LogProbField), LogProbField),
                RequiredInt(root, TokensField),
                root.TryGetProperty(RankScoreField, out JsonElement rs) && rs.ValueKind != JsonValueKind.Null
                    ? ReadDouble(rs, RankScoreField)
                    : null);
        }
    }

    /// <summary>
    /// Streams the candidates of a file in order. A malformed line that is followed by a line break is
    /// corruption and throws <see cref="InvalidDataException"/> (file and line named). A malformed last
    /// line with no line break after it is what an interrupted writer leaves: it is dropped and recorded
    /// in <paramref name="report"/>. Blank lines are skipped.
    /// </summary>
    public static IEnumerable<Candidate> Read(string path, CandidateReadReport? report = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        report ??= new CandidateReadReport();
        report.Path = path;
        return ReadIterator(path, report);
    }

    /// <summary>All candidates of a file in a list (see <see cref="Read"/>).</summary>
    public static List<Candidate> ReadAll(string path, CandidateReadReport? report = null) => Read(path, report).ToList();

    /// <summary>
    /// The (question, index) pairs already saved in <paramref name="path"/> (empty when the file does
    /// not exist), for resuming a sampling run: draw only the pairs this set lacks.
    /// </summary>
    public static SavedCandidates Existing(string path, CandidateReadReport? report = null)
    {
        var saved = new SavedCandidates();
        if (File.Exists(path))
        {
            foreach (Candidate c in Read(path, report))
            {
                saved.Add(c.QuestionId, c.Index);
            }
        }

        return saved;
    }

    private static IEnumerable<Candidate> ReadIterator(string path, CandidateReadReport report)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16);
        foreach (var line in JsonLineReader.Split(stream, skipBom: false))
        {
            report.Lines = line.Line;
            if (JsonLineReader.IsBlank(line.Bytes.Span))
            {
                continue;
            }

            Candidate candidate;
            try
            {
                candidate = Parse(line.Bytes.Span);
            }
            catch (FormatException e) when (!line.Terminated)
            {
                report.TruncatedLine = line.Line;
                report.TruncatedReason = e.Message;
                report.TruncatedBytes = line.Bytes.Length;
                yield break;
            }
            catch (FormatException e)
            {
                throw new InvalidDataException($"{path}:{line.Line}: {e.Message}", e);
            }

            report.Candidates++;
            yield return candidate;
        }
    }


    private static void WriteDouble(Utf8JsonWriter w, string name, double value)
    {
        if (double.IsFinite(value))
        {
            w.WriteNumber(name, value);
        }
        else
        {
            // JSON has no literal for these; a string keeps e.g. a -inf log-probability readable.
            w.WriteString(name, double.IsNaN(value) ? "NaN" : value > 0 ? "Infinity" : "-Infinity");
        }
    }

    private static double ReadDouble(JsonElement e, string name)
    {
        if (e.ValueKind == JsonValueKind.Number)
        {
            return e.GetDouble();
        }

        if (e.ValueKind == JsonValueKind.String)
        {
            switch (e.GetString())
            {
                case "NaN":
                    return double.NaN;
                case "Infinity":
                    return double.PositiveInfinity;
                case "-Infinity":
                    return double.NegativeInfinity;
            }
        }

        throw new FormatException($"\"{name}\" must be a number, got {e.ValueKind} {e.GetRawText()}");
    }

    private static JsonElement Required(JsonElement root, string name) =>
        root.TryGetProperty(name, out JsonElement e) ? e : throw new FormatException($"missing field \"{name}\"");

    private static string RequiredString(JsonElement root, string name)
    {
        JsonElement e = Required(root, name);
        return e.ValueKind == JsonValueKind.String ? e.GetString()! : throw new FormatException($"\"{name}\" must be a string, got {e.ValueKind}");
    }

    private static string? OptionalString(JsonElement root, string name)
    {
        JsonElement e = Required(root, name);
        return e.ValueKind switch
        {
            JsonValueKind.Null => null,
            JsonValueKind.String => e.GetString(),
            _ => throw new FormatException($"\"{name}\" must be a string or null, got {e.ValueKind}"),
        };
    }

    private static int RequiredInt(JsonElement root, string name)
    {
        JsonElement e = Required(root, name);
        return e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int v) && v >= 0
            ? v
            : throw new FormatException($"\"{name}\" must be a non-negative integer, got {e.GetRawText()}");
    }

    private static bool RequiredBool(JsonElement root, string name)
    {
        JsonElement e = Required(root, name);
        return e.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new FormatException($"\"{name}\" must be true or false, got {e.ValueKind}"),
        };
    }
}

/// <summary>What <see cref="CandidateJsonl.Read"/> saw; filled in as the enumeration proceeds.</summary>
public sealed class CandidateReadReport
{
    /// <summary>The file read.</summary>
    public string Path { get; internal set; } = "";

    /// <summary>Lines seen so far (blank ones and a dropped truncated one included).</summary>
    public long Lines { get; internal set; }

    /// <summary>Candidates returned.</summary>
    public int Candidates { get; internal set; }

    /// <summary>1-based number of the unterminated, unparsable last line that was dropped; null when none.</summary>
    public long? TruncatedLine { get; internal set; }

    /// <summary>Why that line did not parse.</summary>
    public string? TruncatedReason { get; internal set; }

    /// <summary>Length in bytes of the dropped line.</summary>
    public int TruncatedBytes { get; internal set; }

    /// <summary>A one-line summary, naming a dropped truncated line when there was one.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append(Path).Append(": ").Append(Candidates).Append(" candidates");
        if (TruncatedLine is { } t)
        {
            sb.Append("; dropped truncated last line ").Append(t).Append(" (").Append(TruncatedBytes).Append(" bytes: ").Append(TruncatedReason).Append(')');
        }

        return sb.ToString();
    }
}

/// <summary>The (question, index) pairs present in a candidate file.</summary>
public sealed class SavedCandidates
{
    private readonly Dictionary<string, HashSet<int>> _byQuestion = new(StringComparer.Ordinal);

    /// <summary>Number of distinct (question, index) pairs.</summary>
    public int Count { get; private set; }

    /// <summary>The questions that have at least one saved candidate.</summary>
    public IEnumerable<string> Questions => _byQuestion.Keys;

    /// <summary>Records a pair; false when it was already present.</summary>
    public bool Add(string questionId, int index)
    {
        ArgumentNullException.ThrowIfNull(questionId);
        if (!_byQuestion.TryGetValue(questionId, out HashSet<int>? set))
        {
            set = [];
            _byQuestion.Add(questionId, set);
        }

        if (!set.Add(index))
        {
            return false;
        }

        Count++;
        return true;
    }

    /// <summary>Whether candidate <paramref name="index"/> of <paramref name="questionId"/> is saved.</summary>
    public bool Contains(string questionId, int index) =>
        _byQuestion.TryGetValue(questionId, out HashSet<int>? set) && set.Contains(index);

    /// <summary>The indices among 0..<paramref name="n"/>-1 still to be drawn for <paramref name="questionId"/>, ascending.</summary>
    public IReadOnlyList<int> Missing(string questionId, int n)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        _byQuestion.TryGetValue(questionId, out HashSet<int>? set);
        var missing = new List<int>();
        for (int i = 0; i < n; i++)
        {
            if (set is null || !set.Contains(i))
            {
                missing.Add(i);
            }
        }

        return missing;
    }
}

/// <summary>
/// Appends candidates to a JSONL file, one line each, flushed as written. Opening an existing file
/// whose last line was cut short by an interrupted run first removes that partial line (or, when the
/// unterminated tail is in fact a whole candidate, ends it with the missing line break), so the file
/// stays a sequence of complete lines.
/// </summary>
public sealed class CandidateJsonlWriter : IDisposable
{
    private readonly FileStream _stream;
    private readonly bool _flushToDisk;

    private CandidateJsonlWriter(FileStream stream, bool flushToDisk, int repairedBytes)
    {
        _stream = stream;
        _flushToDisk = flushToDisk;
        DroppedPartialBytes = repairedBytes;
    }

    /// <summary>Bytes of a partial last line removed when the file was opened (0 when none).</summary>
    public int DroppedPartialBytes { get; }

    /// <summary>Candidates appended through this writer.</summary>
    public int Written { get; private set; }

    /// <summary>
    /// Opens <paramref name="path"/> for appending (creating it and its folder when missing).
    /// <paramref name="flushToDisk"/> also forces each line to the device, not just to the OS; the
    /// default keeps lines safe against the process dying, which is what resume needs.
    /// </summary>
    public static CandidateJsonlWriter Open(string path, bool flushToDisk = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir))
        {
            Directory.CreateDirectory(dir);
        }

        var stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        try
        {
            int dropped = RepairTail(stream);
            stream.Seek(0, SeekOrigin.End);
            return new CandidateJsonlWriter(stream, flushToDisk, dropped);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Appends one candidate as a line and flushes it.</summary>
    public void Append(Candidate candidate)
    {
        byte[] json = CandidateJsonl.Serialize(candidate);
        byte[] line = new byte[json.Length + 1];
        json.CopyTo(line, 0);
        line[^1] = (byte)'\n';
        _stream.Write(line);
        _stream.Flush(_flushToDisk);
        Written++;
    }

    /// <inheritdoc />
    public void Dispose() => _stream.Dispose();

    /// <summary>Makes the file end at a line break; returns the bytes of a partial line removed.</summary>
    private static int RepairTail(FileStream stream)
    {
        long length = stream.Length;
        if (length == 0)
        {
            return 0;
        }

        stream.Seek(length - 1, SeekOrigin.Begin);
        if (stream.ReadByte() == '\n')
        {
            return 0;
        }

        // Find where the last line starts by scanning backwards in blocks.
        long lineStart = 0;
        byte[] block = new byte[1 << 16];
        long pos = length;
        while (pos > 0)
        {
            int size = (int)Math.Min(block.Length, pos);
            pos -= size;
            stream.Seek(pos, SeekOrigin.Begin);
            stream.ReadExactly(block, 0, size);
            int nl = Array.LastIndexOf(block, (byte)'\n', size - 1, size);
            if (nl >= 0)
            {
                lineStart = pos + nl + 1;
                break;
            }
        }

        long tailLength = length - lineStart;
        byte[] tail = new byte[tailLength];
        stream.Seek(lineStart, SeekOrigin.Begin);
        stream.ReadExactly(tail);
        ReadOnlySpan<byte> content = tail.AsSpan().TrimEnd((byte)'\r');
        bool complete;
        try
        {
            CandidateJsonl.Parse(content);
            complete = true;
        }
        catch (FormatException)
        {
            complete = content.IndexOfAnyExcept(" \t"u8) < 0 && content.Length > 0;
        }

        if (complete)
        {
            stream.Seek(0, SeekOrigin.End);
            stream.WriteByte((byte)'\n');
            stream.Flush();
            return 0;
        }

        stream.SetLength(lineStart);
        stream.Flush();
        return (int)tailLength;
    }
}
