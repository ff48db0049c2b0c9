using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace NegDistill.Data.Evaluation;

/// <summary>
/// The candidate file: one <see cref="Candidate"/> per line as JSON (<see cref="DataJson"/>:
/// <c>{"question_id":..,"subject":..,"index":..,"text":..,"answer":..|null,"correct":..,"log_prob":..,"tokens":..,"rank_score":..|null}</c>).
/// Lines are appended and flushed one at a time, so a sampling run that is killed keeps every candidate
/// it finished; at worst the last line is cut short, and <see cref="Read"/> drops (and reports) that line
/// while <see cref="CandidateJsonlWriter.Open"/> trims it away before appending more.
/// </summary>
public static class CandidateJsonl
{
    /// <summary>One candidate as a JSON line, without the line terminator, UTF-8.</summary>
    public static byte[] Serialize(Candidate candidate) => JsonSerializer.SerializeToUtf8Bytes(candidate, DataJson.Lines.Candidate);

    /// <summary>Parses one JSON line; throws <see cref="FormatException"/> naming what is wrong.</summary>
    public static Candidate Parse(ReadOnlySpan<byte> line)
    {
        if (Utf8.ToUtf16(line, new char[line.Length], out int read, out _, replaceInvalidSequences: false) != OperationStatus.Done)
            throw new FormatException($"invalid UTF-8 at byte {read + 1} of the line");
        Candidate? c;
        try { c = JsonSerializer.Deserialize(line, DataJson.Lines.Candidate); }
        catch (JsonException e) { throw new FormatException("invalid JSON: " + e.Message, e); }
        if (c == null) throw new FormatException("a candidate line must be a JSON object, got null");
        if (c.Index < 0) throw new FormatException($"\"index\" must be a non-negative integer, got {c.Index}");
        if (c.Tokens < 0) throw new FormatException($"\"tokens\" must be a non-negative integer, got {c.Tokens}");
        return c;
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
        return ReadLines(path, report);
    }

    /// <summary>All candidates of a file in a list (see <see cref="Read"/>).</summary>
    public static List<Candidate> ReadAll(string path, CandidateReadReport? report = null) => Read(path, report).ToList();

    /// <summary>The (question, index) pairs already saved in <paramref name="path"/> (empty when the file
    /// does not exist), for resuming a sampling run: draw only the pairs this set lacks.</summary>
    public static SavedCandidates Existing(string path, CandidateReadReport? report = null)
    {
        var saved = new SavedCandidates();
        if (File.Exists(path))
            foreach (var c in Read(path, report)) saved.Add(c.QuestionId, c.Index);
        return saved;
    }

    static IEnumerable<Candidate> ReadLines(string path, CandidateReadReport report)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16);
        foreach (var line in JsonLineReader.Split(stream, skipBom: false))
        {
            report.Lines = line.Line;
            if (JsonLineReader.IsBlank(line.Bytes.Span)) continue;
            Candidate c;
            try { c = Parse(line.Bytes.Span); }
            catch (FormatException e) when (!line.Terminated)
            {
                (report.TruncatedLine, report.TruncatedReason, report.TruncatedBytes) = (line.Line, e.Message, line.Bytes.Length);
                yield break;
            }
            catch (FormatException e) { throw new InvalidDataException($"{path}:{line.Line}: {e.Message}", e); }
            report.Candidates++;
            yield return c;
        }
    }
}

/// <summary>What <see cref="CandidateJsonl.Read"/> saw; filled in as the enumeration proceeds.</summary>
public sealed class CandidateReadReport
{
    public string Path { get; internal set; } = "";
    /// <summary>Lines seen so far (blank ones and a dropped truncated one included).</summary>
    public long Lines { get; internal set; }
    public int Candidates { get; internal set; }
    /// <summary>1-based number of the unterminated, unparsable last line that was dropped; null when none.</summary>
    public long? TruncatedLine { get; internal set; }
    /// <summary>Why that line did not parse.</summary>
    public string? TruncatedReason { get; internal set; }
    /// <summary>Length in bytes of the dropped line.</summary>
    public int TruncatedBytes { get; internal set; }

    /// <summary>A one-line summary, naming a dropped truncated line when there was one.</summary>
    public override string ToString() =>
        $"{Path}: {Candidates} candidates" + (TruncatedLine is { } t ? $"; dropped truncated last line {t} ({TruncatedBytes} bytes: {TruncatedReason})" : "");
}

/// <summary>The (question, index) pairs present in a candidate file.</summary>
public sealed class SavedCandidates
{
    readonly Dictionary<string, HashSet<int>> _byQuestion = new(StringComparer.Ordinal);

    /// <summary>Number of distinct (question, index) pairs.</summary>
    public int Count { get; private set; }

    /// <summary>The questions that have at least one saved candidate.</summary>
    public IEnumerable<string> Questions => _byQuestion.Keys;

    /// <summary>Records a pair; false when it was already present.</summary>
    public bool Add(string questionId, int index)
    {
        ArgumentNullException.ThrowIfNull(questionId);
        if (!_byQuestion.TryGetValue(questionId, out var set)) _byQuestion.Add(questionId, set = []);
        if (!set.Add(index)) return false;
        Count++;
        return true;
    }

    public bool Contains(string questionId, int index) => _byQuestion.TryGetValue(questionId, out var set) && set.Contains(index);

    /// <summary>The indices among 0..<paramref name="n"/>-1 still to be drawn for <paramref name="questionId"/>, ascending.</summary>
    public IReadOnlyList<int> Missing(string questionId, int n)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        _byQuestion.TryGetValue(questionId, out var set);
        return Enumerable.Range(0, n).Where(i => set == null || !set.Contains(i)).ToList();
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
    readonly FileStream _stream;
    readonly bool _flushToDisk;

    CandidateJsonlWriter(FileStream stream, bool flushToDisk, int repairedBytes) => (_stream, _flushToDisk, DroppedPartialBytes) = (stream, flushToDisk, repairedBytes);

    /// <summary>Bytes of a partial last line removed when the file was opened (0 when none).</summary>
    public int DroppedPartialBytes { get; }

    /// <summary>Candidates appended through this writer.</summary>
    public int Written { get; private set; }

    /// <summary>Opens <paramref name="path"/> for appending (creating it and its folder when missing).
    /// <paramref name="flushToDisk"/> also forces each line to the device, not just to the OS; the
    /// default keeps lines safe against the process dying, which is what resume needs.</summary>
    public static CandidateJsonlWriter Open(string path, bool flushToDisk = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
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
        var line = new byte[json.Length + 1];
        json.CopyTo(line, 0);
        line[^1] = (byte)'\n';
        _stream.Write(line);
        _stream.Flush(_flushToDisk);
        Written++;
    }

    public void Dispose() => _stream.Dispose();

    /// <summary>Makes the file end at a line break; returns the bytes of a partial line removed.</summary>
    static int RepairTail(FileStream stream)
    {
        long length = stream.Length;
        if (length == 0) return 0;
        stream.Seek(length - 1, SeekOrigin.Begin);
        if (stream.ReadByte() == '\n') return 0;

        // where the last line starts: scan backwards in blocks
        long lineStart = 0, pos = length;
        var block = new byte[1 << 16];
        while (pos > 0)
        {
            int size = (int)Math.Min(block.Length, pos);
            pos -= size;
            stream.Seek(pos, SeekOrigin.Begin);
            stream.ReadExactly(block, 0, size);
            int nl = Array.LastIndexOf(block, (byte)'\n', size - 1, size);
            if (nl >= 0) { lineStart = pos + nl + 1; break; }
        }
        var tail = new byte[length - lineStart];
        stream.Seek(lineStart, SeekOrigin.Begin);
        stream.ReadExactly(tail);
        var content = tail.AsSpan().TrimEnd((byte)'\r');
        bool complete;
        try { CandidateJsonl.Parse(content); complete = true; }
        catch (FormatException) { complete = content.Length > 0 && content.IndexOfAnyExcept(" \t"u8) < 0; }
        if (complete)
        {
            stream.Seek(0, SeekOrigin.End);
            stream.WriteByte((byte)'\n');
            stream.Flush();
            return 0;
        }
        stream.SetLength(lineStart);
        stream.Flush();
        return tail.Length;
    }
}
