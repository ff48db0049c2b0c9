namespace NegDistill.Data;

/// <summary>What a loader does with a malformed line, file or field.</summary>
public enum MalformedPolicy
{
    /// <summary>Report it (file, line, reason) in <see cref="LoadReport"/>, count it, and go on.</summary>
    Skip,

    /// <summary>Throw <see cref="MalformedRecordException"/> naming the file and line.</summary>
    Stop,
}

/// <summary>One problem found while loading.</summary>
/// <param name="File">The file, as the loader opened it.</param>
/// <param name="Line">1-based line number (for a one-object-per-file JSON file: the line of the JSON error, or 1).</param>
/// <param name="Reason">What was wrong.</param>
/// <param name="Rationales">How many teacher rationales were lost with it, where that is known (0 otherwise).</param>
/// <param name="RecordSkipped">True when the whole record was not delivered; false when only part of it (e.g. one rationale) was invalid.</param>
public sealed record MalformedEntry(string File, long Line, string Reason, int Rationales, bool RecordSkipped)
{
    public override string ToString() => $"{File}:{Line}: {Reason}";
}

/// <summary>Raised under <see cref="MalformedPolicy.Stop"/>; the message names file and line.</summary>
public sealed class MalformedRecordException : Exception
{
    public MalformedRecordException(MalformedEntry entry, Exception? inner = null)
        : base($"malformed record at {entry.File}:{entry.Line}: {entry.Reason}", inner)
    {
        Entry = entry;
    }

    public MalformedEntry Entry { get; }

    public string File => Entry.File;

    public long Line => Entry.Line;

    public string Reason => Entry.Reason;
}

/// <summary>
/// Counts of what a loader read, so that nothing is lost silently: every line is either a record,
/// blank, or malformed (and then listed with its file, line and reason).
/// </summary>
public sealed class LoadReport
{
    /// <summary>At most this many entries are kept in <see cref="Entries"/>; all are counted.</summary>
    public const int MaxEntriesKept = 10_000;

    private readonly List<MalformedEntry> _entries = new();

    /// <summary>Files opened.</summary>
    public int Files { get; internal set; }

    /// <summary>Bytes read from those files.</summary>
    public long Bytes { get; internal set; }

    /// <summary>Lines read from JSONL files plus one per whole-file JSON document.</summary>
    public long Lines { get; internal set; }

    /// <summary>Empty or whitespace-only lines (not records, not errors).</summary>
    public long BlankLines { get; internal set; }

    /// <summary>Records delivered to the caller.</summary>
    public long Records { get; internal set; }

    /// <summary>Lines or files that were not delivered because they were malformed.</summary>
    public long MalformedRecords { get; internal set; }

    /// <summary>Teacher rationales known to be lost: invalid array elements, and the rationales of skipped records whose array could be read.</summary>
    public long MalformedRationales { get; internal set; }

    /// <summary>Of <see cref="MalformedRationales"/>: rationales of records that were skipped whole.</summary>
    public long SkippedRecordRationales { get; internal set; }

    /// <summary>Of <see cref="MalformedRationales"/>: single invalid elements inside delivered records.</summary>
    public long InvalidRationales { get; internal set; }

    /// <summary>All problems found (records skipped and partial problems).</summary>
    public long Problems { get; internal set; }

    /// <summary>The first <see cref="MaxEntriesKept"/> problems, in the order met.</summary>
    public IReadOnlyList<MalformedEntry> Entries => _entries;

    internal void Add(MalformedEntry entry)
    {
        Problems++;
        MalformedRationales += entry.Rationales;
        if (entry.RecordSkipped)
        {
            MalformedRecords++;
            SkippedRecordRationales += entry.Rationales;
        }
        else
        {
            InvalidRationales += entry.Rationales;
        }

        if (_entries.Count < MaxEntriesKept)
        {
            _entries.Add(entry);
        }
    }

    public override string ToString() =>
        $"files {Files}, lines {Lines}, records {Records}, blank {BlankLines}, malformed records {MalformedRecords}, " +
        $"malformed rationales {MalformedRationales}, problems {Problems}";
}
