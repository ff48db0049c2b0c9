namespace NegDistill.Method.Settings;

/// <summary>Where a run's settings were typed: errors name them as the user wrote them.</summary>
public enum SettingSource
{
    /// <summary>Command-line options: <c>--micro-batch</c>.</summary>
    CommandLine,
    /// <summary>The pipeline's JSON file: <c>train.micro_batch</c>.</summary>
    Config,
}

/// <summary>One setting's two spellings and its help text, declared once beside its record's property.
/// (The records' properties are settable, not init-only: System.Text.Json's source generator fills
/// init-only properties that the JSON leaves out with default(T), losing their initialisers.)</summary>
/// <param name="Option">the command-line option (or argument), e.g. <c>--micro-batch</c>; null when the CLI has none</param>
/// <param name="Field">the pipeline JSON field, e.g. <c>train.micro_batch</c>; null when the config has none</param>
public sealed record SettingInfo(string? Option, string? Field, string Help)
{
    /// <summary>The spelling of <paramref name="source"/> (the other one when that source has none).</summary>
    public string NameIn(SettingSource source) => (source == SettingSource.CommandLine ? Option ?? Field : Field ?? Option)!;
}

/// <summary>
/// Collects every problem with a set of settings, each under the name the user typed, so that a run
/// is refused with all of them at once and before any work starts.
/// </summary>
public sealed class SettingsCheck(SettingSource source, string? file = null)
{
    readonly List<string> _errors = new();

    public SettingSource Source => source;
    public IReadOnlyList<string> Errors => _errors;

    public string Name(SettingInfo s) => s.NameIn(source);

    public void Fail(SettingInfo s, string why) => _errors.Add($"{Name(s)}: {why}");

    public void Require(bool ok, SettingInfo s, string why) { if (!ok) Fail(s, why); }

    public void Positive(long v, SettingInfo s) => Require(v > 0, s, $"must be positive (got {v})");

    public void NonNegative(long v, SettingInfo s, string zeroMeans) => Require(v >= 0, s, $"must be 0 ({zeroMeans}) or positive (got {v})");

    /// <summary>A finite number above zero (NaN and ±Infinity refused).</summary>
    public void Positive(double v, SettingInfo s) => Require(double.IsFinite(v) && v > 0, s, $"must be a positive number (got {Show(v)})");

    public void InRange(double v, double lo, double hiExclusive, SettingInfo s) =>
        Require(double.IsFinite(v) && v >= lo && v < hiExclusive, s, $"must be in [{lo}, {hiExclusive}) (got {Show(v)})");

    static string Show(double v) => v.ToString("G", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>A file, folder (holding files that end in one of <paramref name="extensions"/>) or glob
    /// that names at least one file.</summary>
    public void Exists(string? path, SettingInfo s, string what, params string[] extensions)
    {
        if (string.IsNullOrEmpty(path)) { Fail(s, $"required: {what}"); return; }
        try { Data.DataSources.Resolve(path, extensions); }
        catch (FileNotFoundException e) { Fail(s, e.Message); }
    }

    /// <summary>Throws <see cref="SettingsException"/> with every problem found, when there is one.</summary>
    public void ThrowIfAny()
    {
        if (_errors.Count > 0) throw new SettingsException(file, _errors);
    }
}

/// <summary>Settings that were refused; each line names the option or field. Exit code 2.</summary>
public sealed class SettingsException(string? file, IReadOnlyList<string> errors)
    : Exception(file == null ? string.Join("\n", errors) : $"{file}: invalid config\n  " + string.Join("\n  ", errors))
{
    public IReadOnlyList<string> Errors { get; } = errors;
}
