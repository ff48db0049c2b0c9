using System.Text.Json;

namespace NegDistill.Data;

/// <summary>
/// One teacher record as the authors publish it (GitHub Yiwei98/TDG, folders <c>GPT3.5-turbo-MATH</c>
/// and <c>GPT4-MATH</c>): a MATH training problem, its reference solution and the teacher's sampled
/// rationales.
/// </summary>
/// <param name="Question">The <c>question</c> field, e.g. "Problem:\n...".</param>
/// <param name="Answer">The <c>answer</c> field: the reference solution with <c>\boxed{..}</c>.</param>
/// <param name="GeneratedAnswers">The <c>generated_answer</c> array in order; an element that was not a
/// string is <c>null</c> here (and reported in the loader's <see cref="LoadReport"/>).</param>
/// <param name="Level">The <c>level</c> field ("Level 1".."Level 5", "Level ?"), or <see cref="MathSubjects.Missing"/>.</param>
/// <param name="Type">The <c>type</c> field ("Counting &amp; Probability", ...), or <see cref="MathSubjects.Missing"/>.</param>
/// <param name="SourceFile">The file it came from.</param>
/// <param name="Line">Its 1-based line in that file.</param>
public sealed record TeacherRecord(
    string Question,
    string Answer,
    IReadOnlyList<string?> GeneratedAnswers,
    string Level,
    string Type,
    string SourceFile,
    long Line)
{
    /// <summary>The canonical MATH subject (e.g. "counting_and_probability").</summary>
    public string Subject => MathSubjects.Canonical(Type);

    /// <summary>"file:line", the record's identity in reports.</summary>
    public string SourceId => $"{SourceFile}:{Line}";
}

/// <summary>A MATH problem, from either published format.</summary>
/// <param name="Problem">The problem statement.</param>
/// <param name="Solution">The worked solution (ends with <c>\boxed{..}</c>).</param>
/// <param name="Answer">The <c>answer</c> field of the JSONL format; null in the one-file-per-problem format.</param>
/// <param name="Type">The raw subject name (<c>type</c> or <c>subject</c>), the folder name when neither field exists, or <see cref="MathSubjects.Missing"/>.</param>
/// <param name="Level">"Level 1".."Level 5" (an integer level is written that way), or <see cref="MathSubjects.Missing"/>.</param>
/// <param name="UniqueId">The JSONL format's <c>unique_id</c>, else null.</param>
public sealed record MathProblem(
    string Problem,
    string Solution,
    string? Answer,
    string Type,
    string Level,
    string? UniqueId,
    string SourceFile,
    long Line)
{
    /// <summary>The canonical MATH subject.</summary>
    public string Subject => MathSubjects.Canonical(Type);

    /// <summary>The reference answer: <see cref="Answer"/> when given, else the last boxed content of the solution.</summary>
    public string? ReferenceAnswer => Answer ?? MathChecker.ExtractAnswer(Solution);
}

/// <summary>A GSM8K problem.</summary>
/// <param name="Question">The question.</param>
/// <param name="Answer">The full reference solution, ending "#### 72".</param>
/// <param name="FinalAnswer">The normalised answer after "####" (commas removed).</param>
public sealed record Gsm8kProblem(string Question, string Answer, string FinalAnswer, string SourceFile, long Line);

/// <summary>
/// Loads teacher-rationale JSONL (<c>question</c>, <c>answer</c>, <c>generated_answer[]</c>,
/// <c>level</c>, <c>type</c>) from a file, a folder tree (all <c>*.jsonl</c>) or a glob.
/// <c>question</c>, <c>answer</c> and <c>generated_answer</c> are required; a record lacking one is
/// skipped and its rationales (when the array is readable) counted as malformed. A non-string element
/// of <c>generated_answer</c> is reported and kept as <c>null</c>, so indices stay those of the file.
/// </summary>
public sealed class TeacherDataLoader : RecordLoader<TeacherRecord>
{
    private static readonly string[] Extensions = [".jsonl"];

    public TeacherDataLoader(MalformedPolicy policy = MalformedPolicy.Stop) : base(policy)
    {
    }

    protected override IReadOnlyCollection<string> FolderExtensions => Extensions;

    protected override TeacherRecord Parse(JsonElement root, string file, long line)
    {
        if (!root.TryGetProperty("generated_answer", out JsonElement ga))
        {
            throw new RecordFormatException("missing field 'generated_answer'");
        }

        if (ga.ValueKind != JsonValueKind.Array)
        {
            throw new RecordFormatException($"field 'generated_answer' must be an array, found {ga.ValueKind}");
        }

        int count = ga.GetArrayLength();
        string question = RequireString(root, "question", count);
        string answer = RequireString(root, "answer", count);
        string level = OptionalLevel(root, "level", count) ?? MathSubjects.Missing;
        string type = OptionalString(root, "type", count) ?? MathSubjects.Missing;

        var rationales = new string?[count];
        int k = 0;
        foreach (JsonElement item in ga.EnumerateArray())
        {
            if (item.ValueKind == JsonValueKind.String)
            {
                rationales[k] = item.GetString();
            }
            else
            {
                ReportPartial(file, line, $"generated_answer[{k}] must be a string, found {item.ValueKind}", 1);
            }

            k++;
        }

        return new TeacherRecord(question, answer, rationales, level, type, file, line);
    }
}

/// <summary>
/// Loads MATH problems: the original one-JSON-per-file layout (<c>problem</c>, <c>solution</c>,
/// <c>level</c>, <c>type</c>; e.g. <c>train/algebra/1.json</c>) and the JSONL export (<c>problem</c>,
/// <c>solution</c>, <c>answer</c>, <c>subject</c>, <c>level</c>, <c>unique_id</c>). Folders are searched
/// for both <c>*.json</c> and <c>*.jsonl</c>.
/// </summary>
public sealed class MathDataLoader : RecordLoader<MathProblem>
{
    private static readonly string[] Extensions = [".json", ".jsonl"];

    public MathDataLoader(MalformedPolicy policy = MalformedPolicy.Stop) : base(policy)
    {
    }

    protected override IReadOnlyCollection<string> FolderExtensions => Extensions;

    protected override MathProblem Parse(JsonElement root, string file, long line)
    {
        string problem = RequireString(root, "problem");
        string solution = RequireString(root, "solution");
        string? answer = OptionalString(root, "answer");
        string? type = OptionalString(root, "type") ?? OptionalString(root, "subject");
        if (type is null)
        {
            // The original layout names the subject by its folder (train/algebra/1.json).
            string? folder = Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(file)));
            type = folder is not null && MathSubjects.IsKnown(folder) ? folder : MathSubjects.Missing;
        }

        string level = OptionalLevel(root, "level") ?? MathSubjects.Missing;
        string? uniqueId = OptionalString(root, "unique_id");
        return new MathProblem(problem, solution, answer, type, level, uniqueId, file, line);
    }
}

/// <summary>Loads GSM8K JSONL (<c>question</c>, <c>answer</c> ending in "#### N"); an answer without a final "####" value is malformed.</summary>
public sealed class Gsm8kLoader : RecordLoader<Gsm8kProblem>
{
    private static readonly string[] Extensions = [".jsonl"];

    public Gsm8kLoader(MalformedPolicy policy = MalformedPolicy.Stop) : base(policy)
    {
    }

    protected override IReadOnlyCollection<string> FolderExtensions => Extensions;

    protected override Gsm8kProblem Parse(JsonElement root, string file, long line)
    {
        string question = RequireString(root, "question");
        string answer = RequireString(root, "answer");
        string final = Gsm8kChecker.ExtractReferenceAnswer(answer)
            ?? throw new RecordFormatException("field 'answer' has no final answer after '####'");
        return new Gsm8kProblem(question, answer, final, file, line);
    }
}
