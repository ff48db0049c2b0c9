using System.Globalization;

namespace NegDistill.Checkpoints;

/// <summary>The seven linear projections of a LLaMA decoder layer.</summary>
public enum LinearModule
{
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

/// <summary>Which LoRA factor: A is (r, in_features), B is (out_features, r).</summary>
public enum LoraMatrix
{
    A,
    B,
}

/// <summary>A parsed PEFT LoRA tensor name.</summary>
public readonly record struct LoraName(int Layer, LinearModule Module, LoraMatrix Matrix)
{
    public override string ToString() => HfNames.Lora(Layer, Module, Matrix);
}

/// <summary>
/// Tensor names as Hugging Face transformers (LlamaForCausalLM) and PEFT write them.
/// Base model: model.embed_tokens.weight, model.layers.{i}.self_attn.{q,k,v,o}_proj.weight,
/// model.layers.{i}.mlp.{gate,up,down}_proj.weight, model.layers.{i}.input_layernorm.weight,
/// model.layers.{i}.post_attention_layernorm.weight, model.norm.weight, lm_head.weight.
/// PEFT adapters prefix the module path with "base_model.model." and end in ".lora_A.weight" / ".lora_B.weight".
/// </summary>
public static class HfNames
{
    public const string EmbedTokens = "model.embed_tokens.weight";
    public const string FinalNorm = "model.norm.weight";
    public const string LmHead = "lm_head.weight";

    /// <summary>What PEFT puts in front of the base model's module path.</summary>
    public const string PeftPrefix = "base_model.model.";

    private const string LayerPrefix = "model.layers.";

    public static IReadOnlyList<LinearModule> AllLinearModules { get; } =
        [LinearModule.QProj, LinearModule.KProj, LinearModule.VProj, LinearModule.OProj, LinearModule.GateProj, LinearModule.UpProj, LinearModule.DownProj];

    /// <summary>"q_proj", "gate_proj", ...</summary>
    public static string ModuleName(LinearModule module) => module switch
    {
        LinearModule.QProj => "q_proj",
        LinearModule.KProj => "k_proj",
        LinearModule.VProj => "v_proj",
        LinearModule.OProj => "o_proj",
        LinearModule.GateProj => "gate_proj",
        LinearModule.UpProj => "up_proj",
        LinearModule.DownProj => "down_proj",
        _ => throw new ArgumentOutOfRangeException(nameof(module), module, "unknown linear module"),
    };

    /// <summary>"self_attn" for q/k/v/o_proj, "mlp" for gate/up/down_proj.</summary>
    public static string ParentName(LinearModule module) => module switch
    {
        LinearModule.QProj or LinearModule.KProj or LinearModule.VProj or LinearModule.OProj => "self_attn",
        LinearModule.GateProj or LinearModule.UpProj or LinearModule.DownProj => "mlp",
        _ => throw new ArgumentOutOfRangeException(nameof(module), module, "unknown linear module"),
    };

    public static bool TryParseModule(string name, out LinearModule module)
    {
        foreach (var m in AllLinearModules)
        {
            if (ModuleName(m) == name) { module = m; return true; }
        }
        module = default;
        return false;
    }

    /// <summary>model.layers.{layer}.{self_attn|mlp}.{module} — the module path without ".weight".</summary>
    public static string ModulePath(int layer, LinearModule module)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        return $"{LayerPrefix}{layer.ToString(CultureInfo.InvariantCulture)}.{ParentName(module)}.{ModuleName(module)}";
    }

    /// <summary>model.layers.{layer}.self_attn.q_proj.weight and the like.</summary>
    public static string Linear(int layer, LinearModule module) => ModulePath(layer, module) + ".weight";

    public static string InputLayerNorm(int layer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        return $"{LayerPrefix}{layer.ToString(CultureInfo.InvariantCulture)}.input_layernorm.weight";
    }

    public static string PostAttentionLayerNorm(int layer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        return $"{LayerPrefix}{layer.ToString(CultureInfo.InvariantCulture)}.post_attention_layernorm.weight";
    }

    /// <summary>
    /// Every base-model tensor name for <paramref name="layerCount"/> layers in the order transformers lists them.
    /// With tied embeddings there is no separate lm_head.weight.
    /// </summary>
    public static IReadOnlyList<string> BaseModelNames(int layerCount, bool tiedEmbeddings = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layerCount);
        var names = new List<string> { EmbedTokens };
        for (int i = 0; i < layerCount; i++)
        {
            foreach (var m in AllLinearModules) names.Add(Linear(i, m));
            names.Add(InputLayerNorm(i));
            names.Add(PostAttentionLayerNorm(i));
        }
        names.Add(FinalNorm);
        if (!tiedEmbeddings) names.Add(LmHead);
        return names;
    }

    /// <summary>base_model.model.model.layers.{layer}.{parent}.{module} — the PEFT module path, to which adapters add their own suffixes.</summary>
    public static string PeftModulePath(int layer, LinearModule module) => PeftPrefix + ModulePath(layer, module);

    /// <summary>base_model.model.model.layers.{layer}.{parent}.{module}.lora_A.weight / .lora_B.weight.</summary>
    public static string Lora(int layer, LinearModule module, LoraMatrix matrix) =>
        PeftModulePath(layer, module) + (matrix == LoraMatrix.A ? ".lora_A.weight" : ".lora_B.weight");

    /// <summary>True if the name has a "lora_A" or "lora_B" component, i.e. claims to be a LoRA factor.</summary>
    public static bool LooksLikeLora(string name) =>
        name.Split('.').Any(part => part is "lora_A" or "lora_B");

    /// <summary>Parses a PEFT LoRA factor name; throws <see cref="FormatException"/> saying what is wrong.</summary>
    public static LoraName ParseLora(string name)
    {
        if (TryParseLora(name, out var result, out string? error)) return result;
        throw new FormatException(error);
    }

    public static bool TryParseLora(string name, out LoraName result, out string? error)
    {
        result = default;
        error = null;
        if (name is null)
        {
            error = "LoRA tensor name is null";
            return false;
        }
        const string expected = "base_model.model.model.layers.{i}.{self_attn|mlp}.{q|k|v|o|gate|up|down}_proj.{lora_A|lora_B}.weight";
        if (!name.StartsWith(PeftPrefix + LayerPrefix, StringComparison.Ordinal))
        {
            error = $"'{name}' is not a PEFT LoRA name: it must start with '{PeftPrefix + LayerPrefix}' (expected {expected})";
            return false;
        }
        // base_model . model . model . layers . {i} . {parent} . {module} . lora_X . weight
        string[] parts = name.Split('.');
        if (parts.Length != 9)
        {
            error = $"'{name}' is not a PEFT LoRA name: expected {expected} (9 dot-separated parts), found {parts.Length} parts";
            return false;
        }
        string layerText = parts[4];
        if (layerText.Length == 0 || !layerText.All(char.IsAsciiDigit) || (layerText.Length > 1 && layerText[0] == '0')
            || !int.TryParse(layerText, NumberStyles.None, CultureInfo.InvariantCulture, out int layer))
        {
            error = $"'{name}' is not a PEFT LoRA name: layer index '{layerText}' is not a non-negative integer without leading zeros";
            return false;
        }
        if (!TryParseModule(parts[6], out var module))
        {
            error = $"'{name}' is not a PEFT LoRA name: '{parts[6]}' is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj";
            return false;
        }
        if (parts[5] != ParentName(module))
        {
            error = $"'{name}' is not a PEFT LoRA name: {parts[6]} belongs under '{ParentName(module)}', not '{parts[5]}'";
            return false;
        }
        LoraMatrix matrix;
        switch (parts[7])
        {
            case "lora_A": matrix = LoraMatrix.A; break;
            case "lora_B": matrix = LoraMatrix.B; break;
            default:
                error = $"'{name}' is not a PEFT LoRA name: expected 'lora_A' or 'lora_B' after the module, found '{parts[7]}'";
                return false;
        }
        if (parts[8] != "weight")
        {
            error = $"'{name}' is not a PEFT LoRA name: it must end in '.weight', found '.{parts[8]}'";
            return false;
        }
        result = new LoraName(layer, module, matrix);
        return true;
    }
}
