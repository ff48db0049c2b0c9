using System.Security.Cryptography;
using System.Text.Json;
using NegDistill.Checkpoints;
using NegDistill.Json;

namespace NegDistill.Model;

/// <summary>What an adapter folder holds.</summary>
public enum AdapterKind
{
    /// <summary>A PEFT LoRA: a student of a LoRA stage (neg, kd, mix, ul, nt, cl, nce).</summary>
    Lora,
    /// <summary>NAT (method.md step 1.2): LoRA_pos and the integration units here, LoRA_neg in the
    /// negative stage's folder that <see cref="AdapterFolder.NatConfigFile"/> names.</summary>
    Nat,
    /// <summary>The ranking model M_rank: a LoRA and the scalar head in <see cref="RankHead.FileName"/>.</summary>
    Ranker,
}

/// <summary>The NAT stage's record of what its folder needs besides its own tensors: where LoRA_neg
/// is (relative to the NAT folder), the SHA-256 of LoRA_neg's weights file when NAT was trained (a
/// retrained LoRA_neg is refused), and the integration unit's settings (a fixed α: the ablation without attention).</summary>
public sealed record NatFolderConfig(string Kind, string NegativeAdapter, string NegativeWeightsSha256, int UnitDim, float Beta, float Temperature,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)] float? FixedAlpha = null);

/// <summary>
/// An adapter folder as found on disk, before anything is loaded: its kind, its LoRA settings and,
/// for NAT, LoRA_neg's folder and settings. `sample`, `eval`, `pipeline` and the stages load students
/// through <see cref="LoadInto"/>, so a folder is loaded as what it is: a LoRA, or NAT with LoRA_neg
/// and the integration units; a folder that is neither is refused with what it lacks.
/// </summary>
public sealed record AdapterFolder
{
    /// <summary>The NAT folder's <see cref="NatFolderConfig"/>.</summary>
    public const string NatConfigFile = "nat_config.json";

    public required string Dir { get; init; }
    public required AdapterKind Kind { get; init; }
    /// <summary>The folder's own LoRA (for NAT: LoRA_pos).</summary>
    public required LoraConfig Lora { get; init; }
    /// <summary>NAT: LoRA_neg's folder, its settings and the unit's.</summary>
    public string? NegativeDir { get; init; }
    public LoraConfig? NegativeLora { get; init; }
    public NatOptions? Nat { get; init; }

    /// <summary>LoRA_neg, LoRA_pos and the unit width for the memory planner (NAT only).</summary>
    public MemoryPlan.NatPlan? NatPlan => Kind == AdapterKind.Nat ? new MemoryPlan.NatPlan(NegativeLora!, Lora, Nat!.UnitDim) : null;

    /// <summary>The line `sample`, `eval` and `pipeline` print about what they loaded.</summary>
    public string Description => Kind switch
    {
        AdapterKind.Nat => $"NAT (LoRA_neg + LoRA_pos + integration unit) from {Dir} (LoRA_neg from {NegativeDir})",
        AdapterKind.Ranker => $"ranking model (LoRA r {Lora.Rank} on {Targets(Lora)} + score head) from {Dir}",
        _ => $"LoRA (r {Lora.Rank}, alpha {Lora.Alpha:G}, on {Targets(Lora)}) from {Dir}",
    };

    static string Targets(LoraConfig c) => string.Join("/", c.Targets);

    static string WeightsPath(string dir) => Path.Combine(dir, AdapterCheckpoint.WeightsFileName);

    /// <summary>Reads what <paramref name="dir"/> holds (adapter_config.json, the tensor names, the NAT
    /// record, the score head) without loading any weights; throws <see cref="InvalidDataException"/>
    /// or <see cref="DirectoryNotFoundException"/> naming the folder and what is missing.</summary>
    public static AdapterFolder Inspect(string dir)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"{dir}: no such adapter folder");
        string config = Path.Combine(dir, AdapterCheckpoint.ConfigFileName), weights = WeightsPath(dir);
        if (!File.Exists(config))
            throw new InvalidDataException($"{dir} is not an adapter folder: it has no {AdapterCheckpoint.ConfigFileName} (a LoRA, NAT or ranking-model folder written by `negdistill train` has one)");
        if (!File.Exists(weights))
            throw new InvalidDataException($"{dir} is not an adapter folder: it has {AdapterCheckpoint.ConfigFileName} but no {AdapterCheckpoint.WeightsFileName}");
        var lora = ModelIO.ReadLoraSettings(dir);
        bool unit;
        using (var f = SafeTensors.Open(weights)) unit = f.Names.Any(n => n.Contains(".integration.", StringComparison.Ordinal));
        if (unit) return InspectNat(dir, lora);
        if (File.Exists(Path.Combine(dir, RankHead.FileName))) return new AdapterFolder { Dir = dir, Kind = AdapterKind.Ranker, Lora = lora };
        return new AdapterFolder { Dir = dir, Kind = AdapterKind.Lora, Lora = lora };
    }

    static AdapterFolder InspectNat(string dir, LoraConfig pos)
    {
        string record = Path.Combine(dir, NatConfigFile);
        NatFolderConfig? nat = null;
        string negDir;
        if (File.Exists(record))
        {
            nat = Read(record);
            negDir = Path.GetFullPath(Path.Combine(dir, nat.NegativeAdapter));
        }
        else negDir = Path.GetFullPath(Path.Combine(dir, "..", "..", "neg", "adapter"));   // the stages' layout, before NAT folders had the record
        if (!File.Exists(Path.Combine(negDir, AdapterCheckpoint.ConfigFileName)))
            throw new InvalidDataException($"{dir} holds NAT's LoRA_pos and integration units, but its LoRA_neg is missing: no adapter in {negDir}"
                + (nat == null ? $" (and no {NatConfigFile} saying where it is)" : $" (named by {record})"));
        if (nat != null && Sha256(WeightsPath(negDir)) != nat.NegativeWeightsSha256)
            throw new InvalidDataException($"{record}: the LoRA_neg in {negDir} is not the one this NAT was trained with (its weights changed since); retrain nat, or restore that LoRA_neg");
        var options = nat == null ? new NatOptions() : new NatOptions { UnitDim = nat.UnitDim, Beta = nat.Beta, Temperature = nat.Temperature, FixedAlpha = nat.FixedAlpha };
        return new AdapterFolder { Dir = dir, Kind = AdapterKind.Nat, Lora = pos, NegativeDir = negDir, NegativeLora = ModelIO.ReadLoraSettings(negDir), Nat = options };
    }

    static NatFolderConfig Read(string path)
    {
        NatFolderConfig? c;
        try { c = JsonSerializer.Deserialize(File.ReadAllText(path), CoreJson.Default.NatFolderConfig); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
        if (c == null || c.Kind != "nat") throw new InvalidDataException($"{path}: \"kind\" must be \"nat\"");
        return c;
    }

    static string Sha256(string file)
    {
        using var s = File.OpenRead(file);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }

    /// <summary>Loads the folder's adapters, frozen, into a model that has none: a LoRA (a ranker's too;
    /// its head loads with <see cref="RankHead.Load"/>), or NAT: LoRA_neg from its folder, then LoRA_pos
    /// and the integration units, integration on.</summary>
    public void LoadInto(LlamaModel model)
    {
        if (model.Adapters.Count > 0) throw new InvalidOperationException($"{Dir}: the model already has adapters");
        if (Kind != AdapterKind.Nat) { ModelIO.LoadLora(model, Dir); return; }
        NatAdapter.AttachFromPeft(model, NegativeDir!, Lora, seed: 0, Nat, trainable: false);
        NatAdapter.LoadTrained(model, Dir);
    }

    /// <summary>Writes a trained NAT: its record (LoRA_neg's folder relative to <paramref name="dir"/>, the
    /// hash of LoRA_neg's weights, the unit's settings), then LoRA_pos and the units in PEFT format
    /// (adapter_config.json last, so a complete folder has all three).</summary>
    public static void SaveNat(LlamaModel model, string dir, LoraConfig pos, string negDir, string? baseModel)
    {
        var unit = model.Adapters.Values.OfType<NatAdapter>().FirstOrDefault()?.Options
            ?? throw new InvalidOperationException("the model has no NAT adapters to save");
        Directory.CreateDirectory(dir);
        var record = new NatFolderConfig("nat", Path.GetRelativePath(dir, negDir), Sha256(WeightsPath(negDir)), unit.UnitDim, unit.Beta, unit.Temperature, unit.FixedAlpha);
        AtomicFile.WriteAllText(Path.Combine(dir, NatConfigFile), JsonSerializer.Serialize(record, CoreJson.Default.NatFolderConfig) + "\n");
        ModelIO.SaveLora(model, dir, pos, baseModel: baseModel);
    }
}
