using System.Text.Json;
using NegDistill.Checkpoints;
using NegDistill.Json;
using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>
/// Moves models between NegDistill and the Hugging Face stack: base weights as (sharded)
/// safetensors under transformers' LLaMA names with a config.json; LoRA adapters as PEFT's
/// adapter_model.safetensors + adapter_config.json, so they load in peft and back.
/// </summary>
public static class ModelIO
{
    static StorageType Storage(DType d) => d switch { DType.F16 => StorageType.F16, DType.BF16 => StorageType.BF16, _ => StorageType.F32 };

    static StoredTensor Export(IBackend ops, Param p, string name)
    {
        var shape = p.Shape.Select(d => (long)d).ToArray();
        if (p.W.DType is DType.F16 or DType.BF16)
        {
            var raw = new ushort[p.Length];
            ops.DownloadRaw16(p.W, raw);
            return StoredTensor.FromRaw16(name, Storage(p.W.DType), shape, raw);
        }
        var f = new float[p.Length];
        ops.Download(p.W, f);
        return StoredTensor.FromFloat32(name, shape, f);
    }

    /// <summary>Writes config.json and the base weights (in their storage precision) to a folder,
    /// sharded at maxShardBytes as transformers does.</summary>
    public static void SaveBase(LlamaModel model, string dir, long maxShardBytes = 5L << 30)
    {
        Directory.CreateDirectory(dir);
        var c = model.Config;
        var config = new HfLlamaConfig
        {
            Architectures = ["LlamaForCausalLM"], ModelType = "llama", HiddenSize = c.Dim, NumHiddenLayers = c.Layers, NumAttentionHeads = c.Heads,
            NumKeyValueHeads = c.Heads, IntermediateSize = c.FfnDim, VocabSize = c.Vocab, MaxPositionEmbeddings = c.MaxSeq, RmsNormEps = c.NormEps,
            RopeTheta = c.RopeTheta, BosTokenId = JsonSerializer.SerializeToElement(c.Bos, CoreJson.Default.Int32),
            EosTokenId = JsonSerializer.SerializeToElement(c.Eos, CoreJson.Default.Int32), HiddenAct = "silu", TieWordEmbeddings = false,
            TorchDtype = model.LmHead.W.DType switch { DType.F16 => "float16", DType.BF16 => "bfloat16", _ => "float32" },
        };
        AtomicFile.WriteAllText(Path.Combine(dir, "config.json"), JsonSerializer.Serialize(config, CoreJson.Default.HfLlamaConfig));
        ShardedCheckpoint.Write(dir, model.BaseParameters.Select(p => Export(model.Ops, p, p.Name)), maxShardBytes);
    }

    /// <summary>Reads a Hugging Face LLaMA config.json (the fields NegDistill uses; others are ignored),
    /// naming the file and any field that is missing, of the wrong type or unsupported.</summary>
    public static LlamaConfig ReadConfig(string dir)
    {
        string path = Path.Combine(dir, "config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no config.json in the checkpoint folder", path);
        HfLlamaConfig? r;
        try { r = JsonSerializer.Deserialize(File.ReadAllText(path), CoreJson.Default.HfLlamaConfig); }
        catch (JsonException e)
        {
            string field = e.Path is { Length: > 2 } p ? p.TrimStart('$', '.') + ": " : "";
            string why = e.Message.Split(" Path:")[0];
            throw new InvalidDataException($"{path}: {field}{why} (line {e.LineNumber + 1})", e);
        }
        if (r == null) throw new InvalidDataException($"{path}: the file holds null, not a config object");
        int Need(int? v, string field) => v ?? throw new InvalidDataException($"{path}: field '{field}' is missing");
        int heads = Need(r.NumAttentionHeads, "num_attention_heads");
        if (r.NumKeyValueHeads is { } kv && kv != heads)
            throw new InvalidDataException($"{path}: num_key_value_heads {kv} ≠ num_attention_heads (grouped-query attention is not supported; LLaMA-1/2-7b has none)");
        if (r.TieWordEmbeddings == true)
            throw new InvalidDataException($"{path}: tie_word_embeddings = true is not supported (LLaMA unties them)");
        static int? Id(JsonElement? e) => e is { ValueKind: JsonValueKind.Number } n && n.TryGetInt32(out int i) ? i : null;
        var c = new LlamaConfig
        {
            Dim = Need(r.HiddenSize, "hidden_size"), Layers = Need(r.NumHiddenLayers, "num_hidden_layers"), Heads = heads,
            FfnDim = Need(r.IntermediateSize, "intermediate_size"), Vocab = Need(r.VocabSize, "vocab_size"),
            MaxSeq = r.MaxPositionEmbeddings ?? 2048, NormEps = r.RmsNormEps ?? 1e-6f, RopeTheta = RopeTheta(r, path),
            Bos = Id(r.BosTokenId) ?? 1, Eos = Id(r.EosTokenId) ?? 2,
        };
        try { c.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
        if (c.MaxSeq < 1) throw new InvalidDataException($"{path}: max_position_embeddings must be positive (got {c.MaxSeq})");
        if (!(c.NormEps > 0) || !float.IsFinite(c.NormEps)) throw new InvalidDataException($"{path}: rms_norm_eps must be a positive number (got {c.NormEps})");
        if (!(c.RopeTheta > 0) || !float.IsFinite(c.RopeTheta)) throw new InvalidDataException($"{path}: rope_theta must be a positive number (got {c.RopeTheta})");
        return c;
    }

    /// <summary>RoPE's base: transformers 4 writes `rope_theta` (and `rope_scaling`), transformers 5 a
    /// `rope_parameters` object holding `rope_theta` and `rope_type`. Only plain RoPE is implemented, so a
    /// scaled variant (llama3, linear, dynamic, yarn, …) is refused rather than silently run unscaled.</summary>
    static float RopeTheta(HfLlamaConfig r, string path)
    {
        float theta = r.RopeTheta ?? 10000f;
        foreach (var (field, rp) in new[] { ("rope_parameters", r.RopeParameters), ("rope_scaling", r.RopeScaling) })
        {
            if (rp is not { } o || o.ValueKind == JsonValueKind.Null) continue;
            if (o.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: field '{field}' is not an object");
            string type = o.TryGetProperty("rope_type", out var rt) && rt.ValueKind == JsonValueKind.String ? rt.GetString()!
                        : o.TryGetProperty("type", out var ty) && ty.ValueKind == JsonValueKind.String ? ty.GetString()! : "default";
            if (type != "default")
                throw new InvalidDataException($"{path}: {field}.rope_type '{type}' is a scaled RoPE; NegDistill implements plain RoPE (LLaMA-1/2) only");
            if (o.TryGetProperty("rope_theta", out var t2) && t2.ValueKind == JsonValueKind.Number) theta = t2.GetSingle();
        }
        return theta;
    }

    /// <summary>The precision the checkpoint stores its projections in (the q_proj of layer 0 decides):
    /// a model built with it loads the weights as stored, without widening.</summary>
    public static DType StorageDType(string dir)
    {
        using var src = ShardedCheckpoint.Open(dir);
        const string probe = "model.layers.0.self_attn.q_proj.weight";
        if (!src.Contains(probe))
            throw new CheckpointFormatException(CheckpointErrorKind.MissingTensor, dir, probe, "the model needs this tensor and the checkpoint has none");
        return src.Info(probe).Type switch { StorageType.F16 => DType.F16, StorageType.BF16 => DType.BF16, _ => DType.F32 };
    }

    /// <summary>Loads base weights from a checkpoint folder into the model. Every model tensor must be
    /// present with the config's shape; 16-bit tensors load as stored into 16-bit model weights and
    /// are widened into F32 ones. Errors name the file and the tensor.</summary>
    public static void LoadBase(LlamaModel model, string dir)
    {
        using var src = ShardedCheckpoint.Open(dir);
        var ops = model.Ops;
        foreach (var p in model.BaseParameters)
        {
            if (!src.Contains(p.Name))
                throw new CheckpointFormatException(CheckpointErrorKind.MissingTensor, dir, p.Name, "the model needs this tensor and the checkpoint has none");
            var info = src.Info(p.Name);
            var want = p.Shape.Select(d => (long)d).ToArray();
            if (!info.Shape.SequenceEqual(want))
                throw new CheckpointFormatException(CheckpointErrorKind.ShapeMismatch, src.FileOf(p.Name), p.Name,
                    $"shape [{string.Join(",", info.Shape)}] does not match config.json, which implies [{string.Join(",", want)}]");
            var t = src.Read(p.Name);
            bool sameWidth16 = p.W.DType is DType.F16 or DType.BF16 && Storage(p.W.DType) == info.Type;
            if (sameWidth16) ops.UploadRaw16(p.W, t.ToRaw16());
            else ops.Upload(p.W, t.ToFloat32());
        }
    }

    /// <summary>Writes the model's LoRA adapters in PEFT's format.</summary>
    public static void SaveLora(LlamaModel model, string dir, LoraConfig cfg, IEnumerable<Param>? extra = null, string? baseModel = null)
    {
        var tensors = new List<StoredTensor>();
        foreach (var ((l, p), a) in model.Adapters.OrderBy(k => k.Key.Layer).ThenBy(k => k.Key.Proj))
            foreach (var prm in a.Parameters) tensors.Add(Export(model.Ops, prm, prm.Name));
        if (extra != null) tensors.AddRange(extra.Select(p => Export(model.Ops, p, p.Name)));
        var ac = new AdapterConfig
        {
            R = cfg.Rank, LoraAlpha = cfg.Alpha, LoraDropout = cfg.Dropout,
            TargetModules = cfg.Targets.Select(t => t.ToString()).ToArray(), BaseModelNameOrPath = baseModel,
        };
        AdapterCheckpoint.Save(dir, ac, tensors, Dims(model.Config));
    }

    public static ModelDims Dims(LlamaConfig c) => new(c.Layers, c.Dim, c.FfnDim, c.Heads, c.Heads);

    /// <summary>The LoRA settings of a PEFT adapter_config.json.</summary>
    public static LoraConfig LoraSettings(AdapterConfig ac) => new()
    {
        Rank = ac.R, Alpha = (float)ac.LoraAlpha, Dropout = (float)ac.LoraDropout,
        Targets = ac.TargetModules.Select(LoraConfig.ParseTarget).ToArray(),
    };

    /// <summary>The LoRA settings of the PEFT folder <paramref name="dir"/>, read before anything is loaded.</summary>
    public static LoraConfig ReadLoraSettings(string dir) => LoraSettings(AdapterConfig.Load(Path.Combine(dir, AdapterCheckpoint.ConfigFileName)));

    /// <summary>Adds LoRA adapters from a PEFT folder to the model (frozen unless trainable) and returns
    /// its settings. Other tensors in the file (e.g. an integration unit) are returned for the caller.</summary>
    public static (LoraConfig Config, IReadOnlyList<StoredTensor> Extra) LoadLora(LlamaModel model, string dir, bool trainable = false, ulong seed = 1)
    {
        var loaded = AdapterCheckpoint.Load(dir, Dims(model.Config));
        var cfg = LoraSettings(loaded.Config);
        var adapters = model.AddLora(cfg, seed, trainable);
        var used = new HashSet<string>();
        foreach (var a in adapters)
            foreach (var p in a.Parameters)
            {
                var t = loaded.TryGet(p.Name, out var st) ? st
                    : throw new CheckpointFormatException(CheckpointErrorKind.MissingTensor, Path.Combine(dir, AdapterCheckpoint.WeightsFileName), p.Name, "adapter_config.json targets this module but the weights lack it");
                model.Ops.Upload(p.W, t.ToFloat32());
                used.Add(p.Name);
            }
        return (cfg, loaded.Tensors.Where(t => !used.Contains(t.Name)).ToList());
    }
}
