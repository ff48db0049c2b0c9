using System.Text.Json;
using System.Text.Json.Serialization;

namespace NegDistill.Method.Settings;

/// <summary>
/// `negdistill pipeline CONFIG.json`: the same settings records as the command line, read from one
/// JSON file (comments and trailing commas allowed, an unknown field refused) and checked completely,
/// every problem named by its field, before anything runs.
/// </summary>
public sealed record PipelineConfig
{
    public string? Base { get; set; }
    public string? TeacherData { get; set; }
    public string Out { get; set; } = "runs/pipeline";
    public string Device { get; set; } = new DeviceSettings().Device;
    public double MemoryLimitGb { get; set; }
    public ulong Seed { get; set; } = 1;
    public string[] Stages { get; set; } = new RunSettings().Stages;
    public TrainSettings Train { get; set; } = new();
    public LoraSettings Lora { get; set; } = new();
    public EvalSettings? Eval { get; set; }

    [JsonIgnore] public RunSettings Run => new() { Base = Base, TeacherData = TeacherData, Out = Out, Seed = Seed, Stages = Stages };
    [JsonIgnore] public DeviceSettings DeviceSettings => new() { Device = Device, MemoryLimitGb = MemoryLimitGb };

    /// <summary>Reads and checks <paramref name="path"/>; throws <see cref="SettingsException"/> naming the
    /// file and every field at fault (a JSON error by its field and line).</summary>
    public static (PipelineConfig Config, IReadOnlyList<Stage> Stages) Load(string path)
    {
        if (!File.Exists(path)) throw new SettingsException(null, [$"{path}: no such config file"]);
        PipelineConfig? c;
        try { c = JsonSerializer.Deserialize(File.ReadAllText(path), MethodJson.Default.PipelineConfig); }
        catch (JsonException e)
        {
            string field = e.Path is { Length: > 2 } p ? p.TrimStart('$', '.') : "(top level)";
            throw new SettingsException(path, [$"{field}: {Reason(e)} (line {e.LineNumber + 1})"]);
        }
        if (c == null) throw new SettingsException(path, ["the file holds null, not a config object"]);
        var check = new SettingsCheck(SettingSource.Config, path);
        var stages = c.Check(check);
        check.ThrowIfAny();
        return (c, stages);
    }

    static string Reason(JsonException e)
    {
        string m = e.Message;
        int cut = m.IndexOf(" Path:", StringComparison.Ordinal);
        return cut > 0 ? m[..cut] : m;
    }

    public IReadOnlyList<Stage> Check(SettingsCheck c)
    {
        var stages = Run.Check(c);
        DeviceSettings.Check(c);
        Train.Check(c);
        Lora.Check(c);
        foreach (var s in stages) s.Check(Train, c);
        if (Eval != null)
        {
            Eval.Check(c);
            c.Require(Eval.Student == "base" || Stages.Contains(Eval.Student) || StageCatalog.Find(Eval.Student)?.IsCompleteIn(Out) == true,
                EvalSettings.Keys.Student, $"'{Eval.Student}' is not one of the stages run (nor complete in {Out})");
            c.Require(Eval.Student != "rank", EvalSettings.Keys.Student, "rank is the ranking model, not a student");
        }
        return stages;
    }
}
