using System.Diagnostics;

namespace NegDistill.Data;

/// <summary>One (question, rationale) training pair of D_pos or D_neg.</summary>
/// <param name="Question">The record's question.</param>
/// <param name="Rationale">One teacher rationale.</param>
/// <param name="Subject">Canonical MATH subject.</param>
/// <param name="Level">MATH level string.</param>
/// <param name="Positive">True for D_pos (its last boxed answer is_equiv the reference's), false for D_neg.</param>
/// <param name="SourceId">"file:line#index" of the rationale in the teacher data.</param>
public sealed record Pair(string Question, string Rationale, string Subject, string Level, bool Positive, string SourceId)
{
    /// <summary>The training text (<see cref="PromptFormat.TrainingText"/>).</summary>
    public string Text => PromptFormat.TrainingText(Question, Rationale);
}

/// <summary>Options of the D_pos / D_neg split.</summary>
public sealed record SplitOptions
{
    /// <summary>
    /// Length limit of the training text <c>question + "\n" + rationale</c>, in Unicode code points.
    /// A pair is kept only when its text is <em>shorter</em> than this.
    /// </summary>
    /// <remarks>
    /// Why code points of that text, and why "shorter than": the authors' loader (Yiwei98/TDG,
    /// <c>code/dataset.py</c>) builds <c>answer = '\n' + generated_answer</c> and keeps the pair when
    /// <c>len(answer + question) &lt; 1200</c>. Python's <c>len</c> counts code points, not UTF-16 units
    /// or bytes, and the strict "&lt;" means a pair of exactly 1,200 is dropped. This reproduces their
    /// D_pos / D_neg exactly; method.md's "longer than 1,200 characters" differs only at exactly 1,200.
    /// </remarks>
    public int MaxTextLength { get; init; } = 1200;

    /// <summary>Keep the pairs in memory (<see cref="DatasetSplitter.Split"/>); off for count-only runs.</summary>
    public bool CollectPairs { get; init; } = true;
}

/// <summary>Counts for one subject or level (or the whole split).</summary>
public sealed record SplitCounts(long Rationales, long Positives, long Negatives, long DroppedPositives, long DroppedNegatives, long Malformed)
{
    /// <summary>Pairs dropped for length.</summary>
    public long Dropped => DroppedPositives + DroppedNegatives;
}

/// <summary>Question-level view of the split (one question = one teacher record).</summary>
/// <param name="Total">Questions (records) seen.</param>
/// <param name="WithPositive">Questions with at least one kept positive.</param>
/// <param name="OnlyNegatives">Questions with kept negatives and no kept positive.</param>
/// <param name="NoneKept">Questions with nothing kept (all dropped for length or malformed, or no rationales).</param>
/// <param name="AllPositive">Questions whose every rationale is a kept positive.</param>
/// <param name="WithPositiveBeforeLengthFilter">Questions with a correct rationale before the length filter.</param>
/// <param name="PositivesOnlyDropped">Questions that had correct rationales but all of them were dropped for length.</param>
/// <param name="ReferenceWithoutAnswer">Questions whose reference solution yields no answer (no <c>\boxed{}</c>, only <c>\fbox{}</c>, or unbalanced); by the reference checker's rule a rationale without an answer is then "correct".</param>
public sealed record QuestionCounts(
    long Total,
    long WithPositive,
    long OnlyNegatives,
    long NoneKept,
    long AllPositive,
    long WithPositiveBeforeLengthFilter,
    long PositivesOnlyDropped,
    long ReferenceWithoutAnswer);

/// <summary>Everything counted by a split.</summary>
public sealed class SplitSummary
{
    /// <summary>Teacher records (questions) processed.</summary>
    public long Records { get; init; }

    /// <summary>Records the loader skipped as malformed (their rationales, where countable, are in <see cref="MalformedRationales"/>).</summary>
    public long MalformedRecords { get; init; }

    /// <summary>All rationales: positives + negatives + dropped + malformed.</summary>
    public long Rationales { get; init; }

    public long Positives { get; init; }

    public long Negatives { get; init; }

    public long DroppedPositives { get; init; }

    public long DroppedNegatives { get; init; }

    /// <summary>Pairs dropped because the training text reached <see cref="SplitOptions.MaxTextLength"/>.</summary>
    public long DroppedForLength => DroppedPositives + DroppedNegatives;

    /// <summary>Rationales that were not strings, or belonged to a record skipped as malformed.</summary>
    public long MalformedRationales { get; init; }

    /// <summary>Per canonical subject, MATH order first.</summary>
    public required IReadOnlyDictionary<string, SplitCounts> BySubject { get; init; }

    /// <summary>Per level string, natural order.</summary>
    public required IReadOnlyDictionary<string, SplitCounts> ByLevel { get; init; }

    public required QuestionCounts Questions { get; init; }

    /// <summary>The options used.</summary>
    public required SplitOptions Options { get; init; }

    /// <summary>Bytes the loader read (0 when records came from memory).</summary>
    public long InputBytes { get; init; }

    /// <summary>Wall time of the split, loading included when it streamed from files.</summary>
    public TimeSpan Elapsed { get; init; }

    /// <summary>Rationales per second over <see cref="Elapsed"/>.</summary>
    public double RationalesPerSecond => Elapsed.TotalSeconds > 0 ? Rationales / Elapsed.TotalSeconds : double.PositiveInfinity;

    /// <summary>positives + negatives + dropped + malformed == rationales.</summary>
    public bool InvariantHolds => Positives + Negatives + DroppedForLength + MalformedRationales == Rationales;
}

/// <summary>D_pos, D_neg and the counts.</summary>
public sealed record SplitResult(IReadOnlyList<Pair> Positives, IReadOnlyList<Pair> Negatives, SplitSummary Summary);

/// <summary>
/// The D_pos / D_neg split of method.md: a rationale is positive when the content of its last
/// <c>\boxed{}</c> is <see cref="MathChecker.IsEquiv"/> the last boxed content of the reference
/// solution, else negative; pairs whose training text is too long are dropped (see
/// <see cref="SplitOptions.MaxTextLength"/>). Mirrors the authors' <c>code/dataset.py</c>.
/// </summary>
public sealed class DatasetSplitter
{
    public DatasetSplitter(SplitOptions? options = null)
    {
        Options = options ?? new SplitOptions();
        if (Options.MaxTextLength <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "MaxTextLength must be positive");
        }
    }

    public SplitOptions Options { get; }

    /// <summary>Splits records into D_pos and D_neg (pairs kept in memory when <see cref="SplitOptions.CollectPairs"/>).</summary>
    /// <param name="records">The records, e.g. from <see cref="TeacherDataLoader.Load"/>.</param>
    /// <param name="loadReport">The loader's report, so records it skipped are counted; read after the records are exhausted.</param>
    public SplitResult Split(IEnumerable<TeacherRecord> records, LoadReport? loadReport = null)
    {
        var pos = new List<Pair>();
        var neg = new List<Pair>();
        Action<Pair>? sink = Options.CollectPairs ? p => (p.Positive ? pos : neg).Add(p) : null;
        SplitSummary summary = Run(records, sink, loadReport);
        return new SplitResult(pos, neg, summary);
    }

    /// <summary>Loads teacher data from a file, folder tree or glob and splits it.</summary>
    public SplitResult SplitPath(string pathOrGlob, MalformedPolicy policy = MalformedPolicy.Skip)
    {
        var loader = new TeacherDataLoader(policy);
        return Split(loader.Load(pathOrGlob), loader.Report);
    }

    /// <summary>Streams the split: every kept pair goes to <paramref name="onPair"/>; returns the counts.</summary>
    public SplitSummary Run(IEnumerable<TeacherRecord> records, Action<Pair>? onPair, LoadReport? loadReport = null)
    {
        ArgumentNullException.ThrowIfNull(records);
        long skippedRecords0 = loadReport?.MalformedRecords ?? 0;
        long skippedRationales0 = loadReport?.SkippedRecordRationales ?? 0;
        long bytes0 = loadReport?.Bytes ?? 0;
        var sw = Stopwatch.StartNew();

        var total = new Counter();
        var bySubject = new Dictionary<string, Counter>(StringComparer.Ordinal);
        var byLevel = new Dictionary<string, Counter>(StringComparer.Ordinal);
        long records0 = 0, withPos = 0, onlyNeg = 0, noneKept = 0, allPos = 0, posBefore = 0, posOnlyDropped = 0, refNone = 0;
        int limit = Options.MaxTextLength;

        foreach (TeacherRecord rec in records)
        {
            records0++;
            string subject = rec.Subject;
            Counter s = GetCounter(bySubject, subject);
            Counter l = GetCounter(byLevel, rec.Level);

            var key = new MathChecker.AnswerKey(MathChecker.ExtractAnswer(rec.Answer));
            if (key.Reference is null)
            {
                refNone++;
            }

            // Length of question + separator in code points, computed once per record.
            int questionLen = MathChecker.CodePointCount(rec.Question) + MathChecker.CodePointCount(PromptFormat.Separator);
            int keptPos = 0, keptNeg = 0, anyPos = 0;
            IReadOnlyList<string?> rationales = rec.GeneratedAnswers;

            // Counted independently of the classification below, so the invariant
            // positives + negatives + dropped + malformed == rationales is a real check.
            total.Seen += rationales.Count;
            s.Seen += rationales.Count;
            l.Seen += rationales.Count;
            for (int i = 0; i < rationales.Count; i++)
            {
                string? r = rationales[i];
                if (r is null)
                {
                    total.Malformed++;
                    s.Malformed++;
                    l.Malformed++;
                    continue;
                }

                bool positive = key.Matches(MathChecker.ExtractAnswer(r));
                bool keep = questionLen + MathChecker.CodePointCount(r) < limit;
                if (positive)
                {
                    anyPos++;
                }

                total.Add(positive, keep);
                s.Add(positive, keep);
                l.Add(positive, keep);
                if (!keep)
                {
                    continue;
                }

                if (positive)
                {
                    keptPos++;
                }
                else
                {
                    keptNeg++;
                }

                onPair?.Invoke(new Pair(rec.Question, r, subject, rec.Level, positive, $"{rec.SourceFile}:{rec.Line}#{i}"));
            }

            if (keptPos > 0)
            {
                withPos++;
            }
            else if (keptNeg > 0)
            {
                onlyNeg++;
            }
            else
            {
                noneKept++;
            }

            if (rationales.Count > 0 && keptPos == rationales.Count)
            {
                allPos++;
            }

            if (anyPos > 0)
            {
                posBefore++;
                if (keptPos == 0)
                {
                    posOnlyDropped++;
                }
            }
        }

        sw.Stop();
        long skippedRecords = (loadReport?.MalformedRecords ?? 0) - skippedRecords0;
        long skippedRationales = (loadReport?.SkippedRecordRationales ?? 0) - skippedRationales0;
        long malformed = total.Malformed + skippedRationales;

        return new SplitSummary
        {
            Records = records0,
            MalformedRecords = skippedRecords,
            Rationales = total.Seen + skippedRationales,
            Positives = total.Positives,
            Negatives = total.Negatives,
            DroppedPositives = total.DroppedPositives,
            DroppedNegatives = total.DroppedNegatives,
            MalformedRationales = malformed,
            BySubject = Freeze(bySubject, SubjectComparer.Instance),
            ByLevel = Freeze(byLevel, NaturalPathComparer.Instance),
            Questions = new QuestionCounts(records0, withPos, onlyNeg, noneKept, allPos, posBefore, posOnlyDropped, refNone),
            Options = Options,
            InputBytes = (loadReport?.Bytes ?? 0) - bytes0,
            Elapsed = sw.Elapsed,
        };
    }

    private static Counter GetCounter(Dictionary<string, Counter> map, string key)
    {
        if (!map.TryGetValue(key, out Counter? c))
        {
            c = new Counter();
            map[key] = c;
        }

        return c;
    }

    private static IReadOnlyDictionary<string, SplitCounts> Freeze(Dictionary<string, Counter> map, IComparer<string> order)
    {
        var sorted = new SortedDictionary<string, SplitCounts>(order);
        foreach ((string k, Counter c) in map)
        {
            sorted[k] = c.ToCounts();
        }

        return sorted;
    }

    private sealed class Counter
    {
        public long Positives;
        public long Negatives;
        public long DroppedPositives;
        public long DroppedNegatives;
        public long Malformed;
        public long Seen;

        public void Add(bool positive, bool keep)
        {
            if (keep)
            {
                if (positive) Positives++; else Negatives++;
            }
            else
            {
                if (positive) DroppedPositives++; else DroppedNegatives++;
            }
        }

        public SplitCounts ToCounts() => new(Seen, Positives, Negatives, DroppedPositives, DroppedNegatives, Malformed);
    }

    private sealed class SubjectComparer : IComparer<string>
    {
        public static readonly SubjectComparer Instance = new();

        public int Compare(string? x, string? y)
        {
            int c = MathSubjects.Order(x!).CompareTo(MathSubjects.Order(y!));
            return c != 0 ? c : string.CompareOrdinal(x, y);
        }
    }
}
