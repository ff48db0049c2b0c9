using System.Text.Json.Serialization;

namespace NegDistill.Model;

/// <summary>LLaMA architecture hyper-parameters. Names follow Hugging Face's config.json where one
/// exists (hidden_size, num_hidden_layers, ...), so a checkpoint's config maps onto this directly.</summary>
public sealed record LlamaConfig
{
    [JsonPropertyName("hidden_size")] public int Dim { get; init; }
    [JsonPropertyName("num_hidden_layers")] public int Layers { get; init; }
    [JsonPropertyName("num_attention_heads")] public int Heads { get; init; }
    [JsonPropertyName("intermediate_size")] public int FfnDim { get; init; }
    [JsonPropertyName("vocab_size")] public int Vocab { get; init; }
    [JsonPropertyName("max_position_embeddings")] public int MaxSeq { get; init; } = 2048;
    [JsonPropertyName("rms_norm_eps")] public float NormEps { get; init; } = 1e-6f;
    [JsonPropertyName("rope_theta")] public float RopeTheta { get; init; } = 10000f;
    [JsonPropertyName("bos_token_id")] public int Bos { get; init; } = 1;
    [JsonPropertyName("eos_token_id")] public int Eos { get; init; } = 2;

    [JsonIgnore] public int HeadDim => Dim / Heads;

    /// <summary>For tests on ILGPU's CPU accelerator: every op runs in milliseconds.</summary>
    public static LlamaConfig Tiny => new() { Dim = 32, Layers = 2, Heads = 4, FfnDim = 64, Vocab = 64, MaxSeq = 64 };

    /// <summary>For CPU runs: the shape of llama2.c's 15M-parameter model (dim 288, 6 layers, 6 heads,
    /// hidden 768), with the vocabulary set by the tokenizer in use.</summary>
    public static LlamaConfig Small => new() { Dim = 288, Layers = 6, Heads = 6, FfnDim = 768, Vocab = 512, MaxSeq = 256 };

    /// <summary>LLaMA-7b exactly as in method.md: 32 layers, d = 4096, 32 heads, FFN 11008, vocab 32000.</summary>
    public static LlamaConfig Llama7B => new() { Dim = 4096, Layers = 32, Heads = 32, FfnDim = 11008, Vocab = 32000, MaxSeq = 2048 };

    public static readonly IReadOnlyList<string> PresetNames = ["tiny", "small", "llama-7b"];

    public static LlamaConfig Preset(string name) => name.ToLowerInvariant() switch
    {
        "tiny" => Tiny,
        "small" => Small,
        "llama-7b" or "llama7b" or "7b" => Llama7B,
        _ => throw new ArgumentException($"unknown model preset '{name}' (tiny, small, llama-7b)"),
    };

    public void Validate()
    {
        if (Dim <= 0 || Layers <= 0 || Heads <= 0 || FfnDim <= 0 || Vocab <= 0)
            throw new ArgumentException($"config: every size must be positive ({this})");
        if (Dim % Heads != 0) throw new ArgumentException($"config: hidden_size {Dim} is not divisible by num_attention_heads {Heads}");
        if (HeadDim % 2 != 0) throw new ArgumentException($"config: head dimension {HeadDim} must be even for RoPE");
    }

    /// <summary>FLOPs of one LoRA training step over <paramref name="batch"/> × <paramref name="seq"/> tokens, the
    /// figure `bench train` and gpu-check divide by the time: forward matmuls 2·N·(L·(4C² + 3CF) + VC) and
    /// attention 4·B·T²·C per layer (QKᵀ and PV, full square); a LoRA step runs the matmuls twice (forward,
    /// dX; frozen weights need no dW) and attention three times.</summary>
    public double LoraStepFlops(int batch, int seq)
    {
        double n = (double)batch * seq;
        double mm = 2 * n * (Layers * (4.0 * Dim * Dim + 3.0 * Dim * FfnDim) + (double)Vocab * Dim);
        double attn = Layers * 4.0 * batch * seq * (double)seq * Dim;
        return 2 * mm + 3 * attn;
    }

    /// <summary>Parameters of the base model (embedding, layers, final norm, untied LM head).</summary>
    public long ParameterCount =>
        2L * Vocab * Dim + Dim + Layers * (4L * Dim * Dim + 3L * Dim * FfnDim + 2L * Dim);
}
