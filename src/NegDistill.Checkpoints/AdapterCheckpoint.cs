namespace NegDistill.Checkpoints;

/// <summary>
/// Dimensions of a LLaMA model, used to check adapter factor shapes exactly. Head dimension defaults to
/// hidden_size / num_attention_heads.
/// </summary>
public sealed record ModelDims(int NumLayers, long HiddenSize, long IntermediateSize, int NumAttentionHeads, int NumKeyValueHeads)
{
    public long? HeadDim { get; init; }

    public long EffectiveHeadDim => HeadDim ?? (NumAttentionHeads > 0
        ? HiddenSize / NumAttentionHeads
        : throw new InvalidOperationException($"num_attention_heads must be positive, not {NumAttentionHeads}"));

    /// <summary>(in_features, out_features) of a projection, as nn.Linear(in, out) in transformers' LlamaDecoderLayer.</summary>
    public (long InFeatures, long OutFeatures) Features(LinearModule module) => module switch
    {
        LinearModule.QProj => (HiddenSize, NumAttentionHeads * EffectiveHeadDim),
        LinearModule.KProj => (HiddenSize, NumKeyValueHeads * EffectiveHeadDim),
        LinearModule.VProj => (HiddenSize, NumKeyValueHeads * EffectiveHeadDim),
        LinearModule.OProj => (NumAttentionHeads * EffectiveHeadDim, HiddenSize),
        LinearModule.GateProj => (HiddenSize, IntermediateSize),
        LinearModule.UpProj => (HiddenSize, IntermediateSize),
        LinearModule.DownProj => (IntermediateSize, HiddenSize),
        _ => throw new ArgumentOutOfRangeException(nameof(module), module, "unknown linear module"),
    };
}

/// <summary>An adapter read back from disk.</summary>
public sealed class LoadedAdapter
{
    private readonly Dictionary<string, StoredTensor> _byName;

    internal LoadedAdapter(AdapterConfig config, IReadOnlyList<StoredTensor> tensors)
    {
        Config = config;
        Tensors = tensors;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public AdapterConfig Config { get; }

    /// <summary>All tensors in file order, LoRA factors and any others.</summary>
    public IReadOnlyList<StoredTensor> Tensors { get; }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public StoredTensor this[string name] =>
        _byName.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"the adapter has no tensor '{name}'");

    public bool TryGet(string name, out StoredTensor tensor) => _byName.TryGetValue(name, out tensor!);

    /// <summary>The LoRA factor for a layer and module, or null if the adapter does not adapt it.</summary>
    public StoredTensor? Lora(int layer, LinearModule module, LoraMatrix matrix) =>
        _byName.TryGetValue(HfNames.Lora(layer, module, matrix), out var t) ? t : null;
}

/// <summary>
/// A PEFT LoRA adapter folder: adapter_model.safetensors (tensor names as PEFT saves them, __metadata__
/// {"format": "pt"}) and adapter_config.json. Tensors whose names are not LoRA factors (for example extra units such
/// as "...q_proj.integration.Q.weight") are stored and loaded unchanged.
/// </summary>
public static class AdapterCheckpoint
{
    public const string WeightsFileName = "adapter_model.safetensors";
    public const string ConfigFileName = "adapter_config.json";

    /// <summary>
    /// Validates then writes the adapter into <paramref name="directory"/> (created if needed); each file is written
    /// atomically, the weights first. With <paramref name="dims"/> every factor's in/out features are checked
    /// exactly; without, factors of one module must agree across layers and with each other (hidden and
    /// intermediate sizes). Nothing is written if validation fails.
    /// </summary>
    public static void Save(string directory, AdapterConfig config, IEnumerable<StoredTensor> tensors, ModelDims? dims = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tensors);
        config.Validate();
        var list = tensors.ToList();
        string weightsPath = Path.Combine(directory, WeightsFileName);
        Validate(config, list, dims, weightsPath);
        string configJson = config.ToJson();
        Directory.CreateDirectory(directory);
        SafeTensors.Write(weightsPath, list, new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteAllText(Path.Combine(directory, ConfigFileName), configJson);
    }

    /// <summary>Reads and validates an adapter folder (see <see cref="Save"/> for the checks).</summary>
    public static LoadedAdapter Load(string directory, ModelDims? dims = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var config = AdapterConfig.Load(Path.Combine(directory, ConfigFileName));
        string weightsPath = Path.Combine(directory, WeightsFileName);
        using var file = SafeTensors.Open(weightsPath);
        var tensors = file.Names.Select(file.Read).ToList();
        Validate(config, tensors, dims, weightsPath);
        return new LoadedAdapter(config, tensors);
    }

    /// <summary>
    /// Checks LoRA factors against the config (rank, target modules), their partner factor and, if given, the model
    /// dimensions; throws <see cref="CheckpointFormatException"/> naming the first offending tensor.
    /// <paramref name="filePath"/> only names the file in errors.
    /// </summary>
    public static void Validate(AdapterConfig config, IReadOnlyList<StoredTensor> tensors, ModelDims? dims, string? filePath)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tensors);
        int r = config.R;
        var targets = new HashSet<string>(config.TargetModules, StringComparer.Ordinal);
        var present = new Dictionary<LoraName, string>();
        // Without model dimensions, sizes inferred from the first factor that fixes them.
        long? hidden = null;
        long? intermediate = null;
        var moduleIn = new Dictionary<LinearModule, (long Size, string From)>();
        var moduleOut = new Dictionary<LinearModule, (long Size, string From)>();
        string? hiddenFrom = null;
        string? intermediateFrom = null;

        foreach (var t in tensors)
        {
            if (!HfNames.LooksLikeLora(t.Name)) continue;
            if (!HfNames.TryParseLora(t.Name, out var lora, out string? error))
                throw new CheckpointFormatException(CheckpointErrorKind.InvalidName, filePath, t.Name, error!);
            string module = HfNames.ModuleName(lora.Module);
            if (!targets.Contains(module))
                throw Mismatch(filePath, t.Name, $"adapts {module}, which is not in target_modules [{string.Join(", ", config.TargetModules)}]");
            if (!t.Type.IsFloatingPoint())
                throw Mismatch(filePath, t.Name, $"LoRA factors must be floating point, found {t.Type.DtypeName()}");
            if (t.Shape.Count != 2)
                throw Mismatch(filePath, t.Name, $"LoRA factors are 2-D, found shape {Shapes.Format(t.Shape)}");
            if (dims is not null && lora.Layer >= dims.NumLayers)
                throw Mismatch(filePath, t.Name, $"layer {lora.Layer} does not exist in a model with {dims.NumLayers} layers");

            long features;
            if (lora.Matrix == LoraMatrix.A)
            {
                if (t.Shape[0] != r)
                    throw Mismatch(filePath, t.Name, $"lora_A must have shape (r={r}, in_features) but has {Shapes.Format(t.Shape)}");
                features = t.Shape[1];
            }
            else
            {
                if (t.Shape[1] != r)
                    throw Mismatch(filePath, t.Name, $"lora_B must have shape (out_features, r={r}) but has {Shapes.Format(t.Shape)}");
                features = t.Shape[0];
            }
            string side = lora.Matrix == LoraMatrix.A ? "in_features" : "out_features";

            if (dims is not null)
            {
                var (inF, outF) = dims.Features(lora.Module);
                long expected = lora.Matrix == LoraMatrix.A ? inF : outF;
                if (features != expected)
                    throw Mismatch(filePath, t.Name,
                        $"{module} has {side}={expected} in this model, so {(lora.Matrix == LoraMatrix.A ? $"lora_A must be ({r}, {expected})" : $"lora_B must be ({expected}, {r})")}, but it is {Shapes.Format(t.Shape)}");
            }
            else
            {
                var seen = lora.Matrix == LoraMatrix.A ? moduleIn : moduleOut;
                if (seen.TryGetValue(lora.Module, out var prior) && prior.Size != features)
                    throw Mismatch(filePath, t.Name, $"{side}={features} disagrees with {side}={prior.Size} of '{prior.From}'");
                seen.TryAdd(lora.Module, (features, t.Name));

                // q/k/v/gate/up read the hidden state and o/down write it; gate/up produce and down reads the intermediate.
                bool touchesHidden = lora.Matrix == LoraMatrix.A
                    ? lora.Module is LinearModule.QProj or LinearModule.KProj or LinearModule.VProj or LinearModule.GateProj or LinearModule.UpProj
                    : lora.Module is LinearModule.OProj or LinearModule.DownProj;
                bool touchesIntermediate = lora.Matrix == LoraMatrix.A
                    ? lora.Module is LinearModule.DownProj
                    : lora.Module is LinearModule.GateProj or LinearModule.UpProj;
                if (touchesHidden)
                {
                    if (hidden is { } h && h != features)
                        throw Mismatch(filePath, t.Name, $"{side}={features} should be the hidden size {h} implied by '{hiddenFrom}'");
                    hidden ??= features;
                    hiddenFrom ??= t.Name;
                }
                if (touchesIntermediate)
                {
                    if (intermediate is { } m && m != features)
                        throw Mismatch(filePath, t.Name, $"{side}={features} should be the intermediate size {m} implied by '{intermediateFrom}'");
                    intermediate ??= features;
                    intermediateFrom ??= t.Name;
                }
            }
            present[lora] = t.Name;
        }

        foreach (var (lora, name) in present)
        {
            var partner = lora with { Matrix = lora.Matrix == LoraMatrix.A ? LoraMatrix.B : LoraMatrix.A };
            if (!present.ContainsKey(partner))
                throw Mismatch(filePath, name, $"has no partner: '{partner}' is missing");
        }
    }

    private static CheckpointFormatException Mismatch(string? path, string tensor, string detail) =>
        new(CheckpointErrorKind.AdapterMismatch, path, tensor, detail);
}
