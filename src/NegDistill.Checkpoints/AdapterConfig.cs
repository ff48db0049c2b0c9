using System.Globalization;
using System.Text.Json;

namespace NegDistill.Checkpoints;

/// <summary>
/// The LoRA subset of PEFT's adapter_config.json. Written the way PEFT writes it (json.dumps with indent=2 and
/// sorted keys); keys this record does not model are kept in <see cref="Extra"/> and written back unchanged.
/// </summary>
public sealed record AdapterConfig
{
    /// <summary>PEFT's default LoRA targets for LLaMA models, used when a config has target_modules: null.</summary>
    public static IReadOnlyList<string> LlamaDefaultTargetModules { get; } = ["q_proj", "v_proj"];

    private static readonly HashSet<string> KnownKeys = new(StringComparer.Ordinal)
    {
        "base_model_name_or_path", "bias", "fan_in_fan_out", "inference_mode", "lora_alpha", "lora_dropout",
        "modules_to_save", "peft_type", "r", "target_modules", "task_type", "use_rslora",
    };

    public string PeftType { get; init; } = "LORA";

    /// <summary>LoRA rank.</summary>
    public required int R { get; init; }

    public required double LoraAlpha { get; init; }

    public double LoraDropout { get; init; }

    /// <summary>Module names the adapter applies to, e.g. ["q_proj", "v_proj"].</summary>
    public required IReadOnlyList<string> TargetModules { get; init; }

    public string Bias { get; init; } = "none";

    public string? TaskType { get; init; } = "CAUSAL_LM";

    public string? BaseModelNameOrPath { get; init; }

    public bool FanInFanOut { get; init; }

    /// <summary>PEFT sets this to true in every config it saves.</summary>
    public bool InferenceMode { get; init; } = true;

    public IReadOnlyList<string>? ModulesToSave { get; init; }

    /// <summary>Rank-stabilised scaling (alpha / sqrt(r)) instead of alpha / r.</summary>
    public bool UseRslora { get; init; }

    /// <summary>Other keys of the file (PEFT writes many, e.g. "revision", "use_dora"), kept verbatim.</summary>
    public IReadOnlyDictionary<string, JsonElement> Extra { get; init; } = new Dictionary<string, JsonElement>();

    /// <summary>The factor applied to B·A: alpha / r, or alpha / sqrt(r) with rsLoRA.</summary>
    public double Scaling => UseRslora ? LoraAlpha / Math.Sqrt(R) : LoraAlpha / R;

    /// <summary>Throws <see cref="ArgumentException"/> if this config cannot describe a LoRA adapter.</summary>
    public void Validate()
    {
        if (PeftType != "LORA") throw new ArgumentException($"peft_type must be \"LORA\", not \"{PeftType}\"");
        if (R <= 0) throw new ArgumentException($"r must be positive, not {R}");
        if (!double.IsFinite(LoraAlpha)) throw new ArgumentException($"lora_alpha must be finite, not {LoraAlpha}");
        if (!(LoraDropout >= 0 && LoraDropout < 1)) throw new ArgumentException($"lora_dropout must be in [0, 1), not {LoraDropout}");
        if (TargetModules is null || TargetModules.Count == 0) throw new ArgumentException("target_modules must list at least one module");
        if (TargetModules.Any(string.IsNullOrEmpty)) throw new ArgumentException("target_modules contains an empty name");
        if (Bias is not ("none" or "all" or "lora_only")) throw new ArgumentException($"bias must be \"none\", \"all\" or \"lora_only\", not \"{Bias}\"");
        if (ModulesToSave is not null && ModulesToSave.Any(string.IsNullOrEmpty)) throw new ArgumentException("modules_to_save contains an empty name");
    }

    /// <summary>The JSON text PEFT would write for this config (no trailing newline, as PEFT writes it).</summary>
    public string ToJson()
    {
        Validate();
        var map = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (k, v) in Extra)
            if (!KnownKeys.Contains(k)) map[k] = v;
        map["base_model_name_or_path"] = BaseModelNameOrPath;
        map["bias"] = Bias;
        map["fan_in_fan_out"] = FanInFanOut;
        map["inference_mode"] = InferenceMode;
        map["lora_alpha"] = LoraAlpha == Math.Floor(LoraAlpha) && Math.Abs(LoraAlpha) < 1e15
            ? new PythonJson.RawNumber(((long)LoraAlpha).ToString(CultureInfo.InvariantCulture))
            : LoraAlpha;
        map["lora_dropout"] = LoraDropout;
        map["modules_to_save"] = ModulesToSave?.ToList();
        map["peft_type"] = PeftType;
        map["r"] = R;
        map["target_modules"] = TargetModules.ToList();
        map["task_type"] = TaskType;
        map["use_rslora"] = UseRslora;
        return PythonJson.Serialize(map);
    }

    /// <summary>Parses adapter_config.json text. <paramref name="sourcePath"/> only names the file in errors.</summary>
    public static AdapterConfig FromJson(string json, string? sourcePath = null)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(CheckpointErrorKind.InvalidJson, sourcePath, null, $"adapter config is not valid JSON: {e.Message}", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw Invalid(sourcePath, $"adapter config must be a JSON object, found {root.ValueKind}");

            string peftType = GetString(root, "peft_type", sourcePath, null)
                ?? throw Invalid(sourcePath, "\"peft_type\" is missing; expected \"LORA\"");
            if (peftType != "LORA")
                throw Invalid(sourcePath, $"peft_type is \"{peftType}\"; only \"LORA\" adapters are supported");

            var extra = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
            foreach (var p in root.EnumerateObject())
                if (!KnownKeys.Contains(p.Name)) extra[p.Name] = p.Value.Clone();

            var config = new AdapterConfig
            {
                PeftType = peftType,
                R = GetInt(root, "r", sourcePath, 8),
                LoraAlpha = GetDouble(root, "lora_alpha", sourcePath, 8),
                LoraDropout = GetDouble(root, "lora_dropout", sourcePath, 0),
                TargetModules = GetStringList(root, "target_modules", sourcePath) ?? LlamaDefaultTargetModules,
                Bias = GetString(root, "bias", sourcePath, "none") ?? "none",
                TaskType = GetString(root, "task_type", sourcePath, null),
                BaseModelNameOrPath = GetString(root, "base_model_name_or_path", sourcePath, null),
                FanInFanOut = GetBool(root, "fan_in_fan_out", sourcePath, false),
                InferenceMode = GetBool(root, "inference_mode", sourcePath, false),
                ModulesToSave = GetStringList(root, "modules_to_save", sourcePath),
                UseRslora = GetBool(root, "use_rslora", sourcePath, false),
                Extra = extra,
            };
            try
            {
                config.Validate();
            }
            catch (ArgumentException e)
            {
                throw Invalid(sourcePath, e.Message);
            }
            return config;
        }
    }

    /// <summary>Writes the config atomically.</summary>
    public void Save(string path) => AtomicFile.WriteAllText(path, ToJson());

    public static AdapterConfig Load(string path)
    {
        if (!File.Exists(path))
            throw new CheckpointFormatException(CheckpointErrorKind.MissingFile, path, null, "adapter config file does not exist");
        return FromJson(File.ReadAllText(path), path);
    }

    public bool Equals(AdapterConfig? other)
    {
        if (ReferenceEquals(this, other)) return true;
        if (other is null) return false;
        return PeftType == other.PeftType && R == other.R && LoraAlpha.Equals(other.LoraAlpha) && LoraDropout.Equals(other.LoraDropout)
            && TargetModules.SequenceEqual(other.TargetModules) && Bias == other.Bias && TaskType == other.TaskType
            && BaseModelNameOrPath == other.BaseModelNameOrPath && FanInFanOut == other.FanInFanOut && InferenceMode == other.InferenceMode
            && (ModulesToSave is null ? other.ModulesToSave is null : other.ModulesToSave is not null && ModulesToSave.SequenceEqual(other.ModulesToSave))
            && UseRslora == other.UseRslora
            && Extra.Count == other.Extra.Count
            && Extra.All(kv => other.Extra.TryGetValue(kv.Key, out var o) && JsonElement.DeepEquals(kv.Value, o));
    }

    public override int GetHashCode() => HashCode.Combine(PeftType, R, LoraAlpha, LoraDropout, TargetModules.Count, BaseModelNameOrPath);

    private static CheckpointFormatException Invalid(string? path, string detail) =>
        new(CheckpointErrorKind.InvalidConfig, path, null, detail);

    private static bool TryGet(JsonElement root, string key, out JsonElement value) =>
        root.TryGetProperty(key, out value) && value.ValueKind != JsonValueKind.Null;

    private static string? GetString(JsonElement root, string key, string? path, string? fallback)
    {
        if (!TryGet(root, key, out var v)) return fallback;
        if (v.ValueKind != JsonValueKind.String) throw Invalid(path, $"\"{key}\" must be a string, found {v.ValueKind}");
        return v.GetString();
    }

    private static int GetInt(JsonElement root, string key, string? path, int fallback)
    {
        if (!TryGet(root, key, out var v)) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i)) throw Invalid(path, $"\"{key}\" must be an integer, found {v.GetRawText()}");
        return i;
    }

    private static double GetDouble(JsonElement root, string key, string? path, double fallback)
    {
        if (!TryGet(root, key, out var v)) return fallback;
        if (v.ValueKind != JsonValueKind.Number) throw Invalid(path, $"\"{key}\" must be a number, found {v.GetRawText()}");
        return v.GetDouble();
    }

    private static bool GetBool(JsonElement root, string key, string? path, bool fallback)
    {
        if (!TryGet(root, key, out var v)) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Invalid(path, $"\"{key}\" must be true or false, found {v.GetRawText()}"),
        };
    }

    private static IReadOnlyList<string>? GetStringList(JsonElement root, string key, string? path)
    {
        if (!TryGet(root, key, out var v)) return null;
        if (v.ValueKind == JsonValueKind.String)
            throw Invalid(path, $"\"{key}\" is the pattern \"{v.GetString()}\"; only an explicit list of module names is supported");
        if (v.ValueKind != JsonValueKind.Array) throw Invalid(path, $"\"{key}\" must be a list of strings, found {v.ValueKind}");
        var list = new List<string>();
        foreach (var item in v.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.String) throw Invalid(path, $"\"{key}\" must be a list of strings, found an entry {item.GetRawText()}");
            list.Add(item.GetString()!);
        }
        return list;
    }
}
