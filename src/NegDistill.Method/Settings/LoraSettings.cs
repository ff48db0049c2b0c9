using NegDistill.Model;

namespace NegDistill.Method.Settings;

/// <summary>The LoRA every stage trains (method.md: r 8, alpha 16, dropout 0.05 on q_proj and v_proj):
/// `train`'s --lora-* options and the pipeline's <c>lora</c> section; defaults are <see cref="LoraConfig"/>'s.</summary>
public sealed record LoraSettings
{
    static readonly LoraConfig Default = new();

    public int R { get; set; } = Default.Rank;
    public float Alpha { get; set; } = Default.Alpha;
    public float Dropout { get; set; } = Default.Dropout;
    public string[] TargetModules { get; set; } = Default.Targets.Select(t => t.ToString()).ToArray();

    public static class Keys
    {
        public static readonly SettingInfo R = new("--lora-r", "lora.r", "LoRA rank");
        public static readonly SettingInfo Alpha = new("--lora-alpha", "lora.alpha", "LoRA alpha (scale alpha/r)");
        public static readonly SettingInfo Dropout = new("--lora-dropout", "lora.dropout", "LoRA dropout, in [0, 1)");
        public static readonly SettingInfo TargetModules = new("--targets", "lora.target_modules", "projections to adapt (comma-separated on the command line)");
    }

    public void Check(SettingsCheck c)
    {
        c.Positive(R, Keys.R);
        c.Positive(Alpha, Keys.Alpha);
        c.InRange(Dropout, 0, 1, Keys.Dropout);
        c.Require(TargetModules.Length > 0, Keys.TargetModules, "at least one projection");
        foreach (var t in TargetModules)
            c.Require(Enum.TryParse<Proj>(t, out _) && !int.TryParse(t, out _), Keys.TargetModules,
                $"unknown module '{t}' ({string.Join(", ", Enum.GetNames<Proj>())})");
        c.Require(TargetModules.Distinct().Count() == TargetModules.Length, Keys.TargetModules, "a projection is named twice");
    }

    /// <summary>The engine's LoRA settings (after <see cref="Check"/>).</summary>
    public LoraConfig ToConfig() => new() { Rank = R, Alpha = Alpha, Dropout = Dropout, Targets = TargetModules.Select(LoraConfig.ParseTarget).ToArray() };
}
