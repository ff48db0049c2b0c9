namespace NegDistill.Data;

/// <summary>
/// The authors' text format, the one place it is written (method.md, Data): a question is
/// <c>"Problem:\n" + problem</c>, a rationale starts <c>"Solution:\n"</c>, and the training text is
/// <c>question + "\n" + rationale</c>. A student is prompted with the question, the separator and the
/// rationale header, and its continuation, with the header put back in front, is a rationale; so
/// training and inference agree by construction.
/// </summary>
public static class PromptFormat
{
    public const string ProblemHeader = "Problem:\n";
    public const string SolutionHeader = "Solution:\n";
    /// <summary>Between question and rationale in the training text.</summary>
    public const string Separator = "\n";

    /// <summary>A problem statement as a question: "Problem:\n" + problem.</summary>
    public static string Question(string problem) => ProblemHeader + problem;

    /// <summary>A solution text as a rationale: "Solution:\n" + solution (also a decoded continuation of <see cref="Prompt"/>).</summary>
    public static string Rationale(string solution) => SolutionHeader + solution;

    /// <summary>What a student continues: question + "\n" + "Solution:\n".</summary>
    public static string Prompt(string question) => question + Separator + SolutionHeader;

    /// <summary>The training text: question + "\n" + rationale.</summary>
    public static string TrainingText(string question, string rationale) => question + Separator + rationale;
}
