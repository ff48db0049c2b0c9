namespace NegDistill.Method.Settings;

/// <summary>What a training run works on: the base checkpoint, the teacher data, where to write, the
/// seed, and the stages in order.</summary>
public sealed record RunSettings
{
    public string? Base { get; init; }
    public string? TeacherData { get; init; }
    public string Out { get; init; } = "runs/train";
    public ulong Seed { get; init; } = 1;
    public string[] Stages { get; init; } = ["neg", "nat", "nce", "rank"];

    public static class Keys
    {
        public static readonly SettingInfo Base = new("--base", "base", "Hugging Face LLaMA checkpoint folder (config.json, *.safetensors, tokenizer)");
        public static readonly SettingInfo TeacherData = new("--data", "teacher_data", "teacher rationales in the authors' JSONL: file, folder tree or glob");
        public static readonly SettingInfo Out = new("--out", "out", "output folder shared by the stages (each writes OUT/<stage>/)");
        public static readonly SettingInfo Seed = new("--seed", "seed", "seed of initialisation, data order and dropout");
        public static readonly SettingInfo Stages = new("stage", "stages", "the stages in order");
    }

    /// <summary>Checks the paths and the stage list (names, duplicates, prerequisites: earlier in the
    /// list or complete under <see cref="Out"/>); returns the stages.</summary>
    public IReadOnlyList<Stage> Check(SettingsCheck c)
    {
        if (string.IsNullOrEmpty(Base)) c.Fail(Keys.Base, "required: a Hugging Face LLaMA checkpoint folder");
        else c.Require(File.Exists(Path.Combine(Base, "config.json")), Keys.Base, $"'{Base}' has no config.json");
        c.Exists(TeacherData, Keys.TeacherData, "the authors' teacher JSONL (file, folder or glob)", ".jsonl");
        c.Require(!string.IsNullOrWhiteSpace(Out), Keys.Out, "required: an output folder");
        c.Require(!File.Exists(Out), Keys.Out, $"'{Out}' is a file; the output must be a folder");
        return StageCatalog.Parse(Stages, Out, c, Keys.Stages);
    }
}
