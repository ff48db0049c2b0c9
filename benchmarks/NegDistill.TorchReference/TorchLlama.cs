// TorchLlama: the engine's LLaMA written again with TorchSharp's own ops; gradients come from
// libtorch's autograd, so this is an independent check of the hand-written backward.
// Mirrors, in the engine:
//   src/NegDistill.Core/Model/LlamaModel.cs (+ .Rows.cs)   the decoder, the KV-cache path
//   src/NegDistill.Core/Model/LlamaConfig.cs               hyper-parameters (read here from HF config.json)
//   src/NegDistill.Core/Model/Adapters.cs                  LoRA: Δy = (alpha/r)·B(A x), PEFT names
//   src/NegDistill.Core/Model/ModelIO.cs                   Hugging Face tensor names
//   src/NegDistill.Core/Ops/{Embedding,RmsNorm,Rope,Attention,SwiGlu,CrossEntropy}.cs
// Nothing from NegDistill.Core is used here. Shapes: B batch, T time, C dim, H heads, hd = C/H,
// F ffn dim, V vocab, L layers.
//
// Conventions the engine fixes and this file follows:
//   RMSNorm    y = x / sqrt(mean(x²) + eps) * w                   (weight after the normalisation)
//   RoPE       rotate-half pairing (i, i + hd/2); inv_freq = 1/theta^(2i/hd) and the angle pos·inv_freq
//              in fp32, cos/sin rounded to fp32 (as transformers does), then widened to the model dtype
//   positions  from the attention mask: the number of real tokens before each one
//   attention  causal and key-padding mask; a query with no visible key gets all-zero probabilities
//   loss       next-token CE averaged over rows with target >= 0 (targets come with the batch)
// Use float64 for parity, float32 for speed. Forward methods allocate torch tensors: call them inside
// `using var scope = torch.NewDisposeScope()`; weights, LoRA factors and KV caches are kept out of scopes.
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace NegDistill.TorchReference;

/// <summary>LLaMA hyper-parameters under Hugging Face config.json names.</summary>
public sealed record TorchLlamaConfig(int Dim, int Layers, int Heads, int FfnDim, int Vocab, int MaxSeq = 2048,
    double NormEps = 1e-6, double RopeTheta = 10000)
{
    public int HeadDim => Dim / Heads;

    /// <summary>Reads hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size,
    /// max_position_embeddings, rms_norm_eps, rope_theta. Errors name the file and the field.</summary>
    public static TorchLlamaConfig FromHfJson(string path)
    {
        if (!File.Exists(path)) throw new InputException($"{path}: config.json not found");
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
        var r = doc.RootElement;
        int I(string f) => r.TryGetProperty(f, out var v) && v.TryGetInt32(out int i) ? i
            : throw new InputException($"{path}: field '{f}' missing or not an integer");
        double D(string f, double dflt) => r.TryGetProperty(f, out var v) ? v.GetDouble() : dflt;
        if (r.TryGetProperty("num_key_value_heads", out var kv) && kv.GetInt32() != I("num_attention_heads"))
            throw new InputException($"{path}: num_key_value_heads differs from num_attention_heads (grouped-query attention is not modelled)");
        var c = new TorchLlamaConfig(I("hidden_size"), I("num_hidden_layers"), I("num_attention_heads"), I("intermediate_size"),
            I("vocab_size"), r.TryGetProperty("max_position_embeddings", out var mp) ? mp.GetInt32() : 2048,
            D("rms_norm_eps", 1e-6), D("rope_theta", 10000));
        if (c.Dim % c.Heads != 0 || c.HeadDim % 2 != 0) throw new InputException($"{path}: hidden_size {c.Dim} / heads {c.Heads} must give an even head dimension");
        return c;
    }

    /// <summary>The seven projections of a layer, by Hugging Face module name, with (in, out) widths.</summary>
    public (int In, int Out) ProjShape(string proj) => proj switch
    {
        "q_proj" or "k_proj" or "v_proj" or "o_proj" => (Dim, Dim),
        "gate_proj" or "up_proj" => (Dim, FfnDim),
        "down_proj" => (FfnDim, Dim),
        _ => throw new ArgumentException($"unknown projection '{proj}'"),
    };

    public static readonly string[] Projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    /// <summary>HF weight name of a projection: model.layers.{l}.self_attn.q_proj.weight, ...mlp.gate_proj.weight.</summary>
    public static string ProjWeightName(int layer, string proj) => $"model.layers.{layer}.{Module(proj)}.{proj}.weight";

    /// <summary>PEFT module prefix: base_model.model.model.layers.{l}.self_attn.q_proj.</summary>
    public static string LoraPrefix(int layer, string proj) => $"base_model.model.model.layers.{layer}.{Module(proj)}.{proj}";

    static string Module(string proj) => proj is "gate_proj" or "up_proj" or "down_proj" ? "mlp" : "self_attn";
}

/// <summary>One LoRA: Δy = scale · (x Aᵀ) Bᵀ, A (r,in), B (out,r), scale = alpha / r (PEFT, no rsLoRA).</summary>
public sealed class TorchLora(Tensor a, Tensor b, double scale)
{
    public Tensor A { get; } = a;
    public Tensor B { get; } = b;
    public double Scale { get; } = scale;
}

/// <summary>Per-layer K and V of every slot, (B,H,Tmax,hd) each, and how many positions are filled.</summary>
public sealed class TorchKvCache : IDisposable
{
    public Tensor[] K { get; }
    public Tensor[] V { get; }
    public int Batch { get; }
    public int MaxSeq { get; }
    /// <summary>Positions 0..Length-1 hold keys and values (the same for every slot).</summary>
    public int Length { get; internal set; }

    internal TorchKvCache(TorchLlamaConfig c, int batch, int maxSeq, ScalarType dtype, Device device)
    {
        (Batch, MaxSeq) = (batch, maxSeq);
        K = new Tensor[c.Layers]; V = new Tensor[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            K[l] = zeros([batch, c.Heads, maxSeq, c.HeadDim], dtype, device).DetachFromDisposeScope();
            V[l] = zeros([batch, c.Heads, maxSeq, c.HeadDim], dtype, device).DetachFromDisposeScope();
        }
    }

    public void Dispose() { foreach (var t in K.Concat(V)) t.Dispose(); }
}

public sealed class TorchLlama : IDisposable
{
    public TorchLlamaConfig Config { get; }
    public ScalarType DType { get; }
    public Device Device { get; }
    /// <summary>Base weights by Hugging Face name, in the engine's order (embedding, layers, final norm, LM head).</summary>
    public Dictionary<string, Tensor> Weights { get; } = new();
    public List<string> WeightNames { get; } = new();
    /// <summary>LoRA adapters by (layer, projection).</summary>
    public Dictionary<(int Layer, string Proj), TorchLora> Lora { get; } = new();

    public TorchLlama(TorchLlamaConfig config, ScalarType dtype = ScalarType.Float64, Device? device = null)
    {
        (Config, DType, Device) = (config, dtype, device ?? CPU);
        int C = config.Dim, Fd = config.FfnDim, V = config.Vocab;
        void Add(string name, params long[] shape)
        {
            WeightNames.Add(name);
            Weights[name] = (name.EndsWith("norm.weight") ? ones(shape, dtype, Device) : zeros(shape, dtype, Device)).DetachFromDisposeScope();
        }
        Add("model.embed_tokens.weight", V, C);
        for (int l = 0; l < config.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            Add(p + "input_layernorm.weight", C);
            Add(p + "self_attn.q_proj.weight", C, C);
            Add(p + "self_attn.k_proj.weight", C, C);
            Add(p + "self_attn.v_proj.weight", C, C);
            Add(p + "self_attn.o_proj.weight", C, C);
            Add(p + "post_attention_layernorm.weight", C);
            Add(p + "mlp.gate_proj.weight", Fd, C);
            Add(p + "mlp.up_proj.weight", Fd, C);
            Add(p + "mlp.down_proj.weight", C, Fd);
        }
        Add("model.norm.weight", C);
        Add("lm_head.weight", V, C);
    }

    /// <summary>Random weights for timing: normal(0, std) matrices, unit norms (the engine's init shape).</summary>
    public void InitRandom(long seed, double std = 0.02)
    {
        using var _ = no_grad();
        manual_seed(seed);
        foreach (var n in WeightNames)
            if (!n.EndsWith("norm.weight")) Weights[n].normal_(0, std);
    }

    /// <summary>Copies base weights from <paramref name="src"/> (any float dtype) into this model. Every
    /// weight must be present with its shape; <paramref name="where"/> names the source in errors.</summary>
    public void LoadWeights(IReadOnlyDictionary<string, Tensor> src, string where)
    {
        using var _ = no_grad();
        foreach (var n in WeightNames)
        {
            if (!src.TryGetValue(n, out var t)) throw new InputException($"{where}: tensor '{n}' missing (the model needs it)");
            if (!t.shape.SequenceEqual(Weights[n].shape))
                throw new InputException($"{where}: tensor '{n}' has shape [{string.Join(", ", t.shape)}], the config implies [{string.Join(", ", Weights[n].shape)}]");
            Weights[n].copy_(t);
        }
    }

    /// <summary>Base weights take part in autograd (full fine-tuning) or not.</summary>
    public void SetTrainBase(bool train)
    {
        foreach (var w in Weights.Values) w.requires_grad_(train);
    }

    /// <summary>Adds a LoRA on one projection. A and B are copied in (or, when null, A is drawn
    /// uniform(±1/√in) and B is zero, PEFT's init); they require grad when <paramref name="trainable"/>.</summary>
    public TorchLora AddLora(int layer, string proj, int rank, double alpha, Tensor? a = null, Tensor? b = null, bool trainable = true)
    {
        var (i, o) = Config.ProjShape(proj);
        var at = a is null ? (rand([rank, i], DType, Device) * 2 - 1) / Math.Sqrt(i) : a.to(DType, Device).clone();
        var bt = b is null ? zeros([o, rank], DType, Device) : b.to(DType, Device).clone();
        if (!at.shape.SequenceEqual(new long[] { rank, i }) || !bt.shape.SequenceEqual(new long[] { o, rank }))
            throw new InputException($"LoRA on layer {layer} {proj}: A [{string.Join(", ", at.shape)}] and B [{string.Join(", ", bt.shape)}] do not fit r = {rank}, in = {i}, out = {o}");
        var lora = new TorchLora(at.detach().requires_grad_(trainable).DetachFromDisposeScope(), bt.detach().requires_grad_(trainable).DetachFromDisposeScope(), alpha / rank);
        Lora[(layer, proj)] = lora;
        return lora;
    }

    /// <summary>Trainable tensors by engine/PEFT name: base weights (when they require grad), then LoRA A, B
    /// by layer and projection.</summary>
    public IEnumerable<(string Name, Tensor T)> Parameters()
    {
        foreach (var n in WeightNames) yield return (n, Weights[n]);
        foreach (var ((l, p), lo) in Lora.OrderBy(k => k.Key.Layer).ThenBy(k => Array.IndexOf(TorchLlamaConfig.Projections, k.Key.Proj)))
        {
            string pre = TorchLlamaConfig.LoraPrefix(l, p);
            yield return (pre + ".lora_A.weight", lo.A);
            yield return (pre + ".lora_B.weight", lo.B);
        }
    }

    // ------------------------------------------------------------------ building blocks

    /// <summary>y(...,out) = x(...,in)·Wᵀ + scale·(x·Aᵀ)·Bᵀ when layer l's projection has a LoRA.</summary>
    public Tensor Linear(int l, string proj, Tensor x)
    {
        var y = F.linear(x, Weights[TorchLlamaConfig.ProjWeightName(l, proj)]);
        if (Lora.TryGetValue((l, proj), out var lo)) y = y + F.linear(F.linear(x, lo.A), lo.B) * lo.Scale;
        return y;
    }

    /// <summary>x (...,C) → x / sqrt(mean(x²) + eps) · w</summary>
    public Tensor RmsNorm(Tensor x, Tensor w) => x * rsqrt(x.pow(2).mean([-1L], keepdim: true) + Config.NormEps) * w;

    /// <summary>cos, sin (B,T,hd/2) for integer positions pos (B,T), computed in fp32 like transformers'
    /// LlamaRotaryEmbedding, then widened to the model dtype.</summary>
    public (Tensor Cos, Tensor Sin) RopeTables(Tensor pos)
    {
        int hd = Config.HeadDim;
        var exponent = arange(0, hd, 2, ScalarType.Float32, Device) / (float)hd;                    // (hd/2) = 2i/hd
        var invFreq = 1.0f / pow(tensor((float)Config.RopeTheta, ScalarType.Float32, Device), exponent);
        var ang = pos.to(ScalarType.Float32).unsqueeze(-1) * invFreq;                                // (B,T,hd/2) fp32
        // cos/sin of the fp32 angle evaluated in fp64 and rounded to fp32: the correctly rounded fp32 table
        var a64 = ang.to(ScalarType.Float64);
        return (a64.cos().to(ScalarType.Float32).to(DType), a64.sin().to(ScalarType.Float32).to(DType));
    }

    /// <summary>x (B,T,H,hd) rotated: (x1, x2) → (x1 cos − x2 sin, x2 cos + x1 sin), halves of hd.</summary>
    public static Tensor ApplyRope(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        var c = cos.unsqueeze(2); var s = sin.unsqueeze(2);                                          // (B,T,1,hd/2)
        var x1 = x.narrow(-1, 0, half); var x2 = x.narrow(-1, half, half);
        return cat([x1 * c - x2 * s, x2 * c + x1 * s], -1);
    }

    /// <summary>Masked softmax attention. q (B,H,Tq,hd), k, v (B,H,Tk,hd), allowed (B or 1, 1, Tq, Tk) bool.
    /// Rows with no allowed key give zero output (the engine's convention for left padding).</summary>
    public static Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor? allowed)
    {
        var scores = q.matmul(k.transpose(-2, -1)) * (1.0 / Math.Sqrt(q.shape[^1]));                // (B,H,Tq,Tk)
        if (allowed is null) return F.softmax(scores, -1).matmul(v);
        // a finite fill keeps fully masked rows finite (uniform), then they are zeroed
        scores = scores.masked_fill(allowed.logical_not(), -1e30);
        var p = F.softmax(scores, -1) * allowed.any(-1, keepdim: true).to(scores.dtype);
        return p.matmul(v);
    }

    // ------------------------------------------------------------------ full forward (training)

    /// <summary>Positions (B,T) int64 from a 0/1 mask: count of real tokens before each position.</summary>
    public static Tensor PositionsFromMask(Tensor mask)
    {
        var m = mask.to(ScalarType.Int64);
        return m.cumsum(1) - m;
    }

    /// <summary>Final normed hidden states (B,T,C). tokens (B,T) int; mask (B,T) 0/1 or null (no padding).</summary>
    public Tensor Hidden(Tensor tokens, Tensor? mask)
    {
        var c = Config;
        long B = tokens.shape[0], T = tokens.shape[1];
        int H = c.Heads, hd = c.HeadDim;
        var tok = tokens.to(ScalarType.Int64);
        var pos = mask is null ? arange(T, ScalarType.Int64, Device).unsqueeze(0).expand(B, T) : PositionsFromMask(mask);
        var (cos, sin) = RopeTables(pos);
        var causal = ones([T, T], ScalarType.Bool, Device).tril();                                 // (T,T): s <= t
        Tensor? allowed = mask is null ? causal.view(1, 1, T, T)
            : causal.view(1, 1, T, T).logical_and(mask.to(ScalarType.Bool).view(B, 1, 1, T));        // (B,1,T,T)
        var x = Weights["model.embed_tokens.weight"].index_select(0, tok.flatten()).view(B, T, c.Dim);   // (B,T,C)
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var xn = RmsNorm(x, Weights[p + "input_layernorm.weight"]);
            var q = ApplyRope(Linear(l, "q_proj", xn).view(B, T, H, hd), cos, sin).transpose(1, 2);  // (B,H,T,hd)
            var k = ApplyRope(Linear(l, "k_proj", xn).view(B, T, H, hd), cos, sin).transpose(1, 2);
            var v = Linear(l, "v_proj", xn).view(B, T, H, hd).transpose(1, 2);
            var ao = Attend(q, k, v, allowed).transpose(1, 2).reshape(B, T, c.Dim);                  // (B,T,C)
            x = x + Linear(l, "o_proj", ao);
            var xn2 = RmsNorm(x, Weights[p + "post_attention_layernorm.weight"]);
            var h = F.silu(Linear(l, "gate_proj", xn2)) * Linear(l, "up_proj", xn2);                   // (B,T,F)
            x = x + Linear(l, "down_proj", h);
        }
        return RmsNorm(x, Weights["model.norm.weight"]);
    }

    /// <summary>Logits (B,T,V).</summary>
    public Tensor Forward(Tensor tokens, Tensor? mask) => F.linear(Hidden(tokens, mask), Weights["lm_head.weight"]);

    /// <summary>Mean next-token cross-entropy over rows with target >= 0 (0 when there are none).
    /// logits (B,T,V), targets (B,T) int, −1 = outside the loss.</summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor targets)
    {
        var y = targets.to(ScalarType.Int64);
        var valid = y.ge(0);
        var logp = F.log_softmax(logits, -1);
        var nll = -logp.gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1);                      // (B,T)
        var count = valid.sum().to(logits.dtype).clamp_min(1.0);
        return (nll * valid.to(logits.dtype)).sum() / count;
    }

    // ------------------------------------------------------------------ KV-cache inference (no grad)

    public TorchKvCache NewCache(int batch, int maxSeq) => new(Config, batch, maxSeq, DType, Device);

    /// <summary>Prefill: tokens (B,T) of unpadded prompts written at positions Length..Length+T−1; returns
    /// the logits of the last position (B,V).</summary>
    public Tensor Prefill(TorchKvCache cache, Tensor tokens) => ForwardCached(cache, tokens);

    /// <summary>One decode step: tokens (B) at position Length; returns logits (B,V).</summary>
    public Tensor DecodeStep(TorchKvCache cache, Tensor tokens) => ForwardCached(cache, tokens.view(tokens.shape[0], 1));

    Tensor ForwardCached(TorchKvCache cache, Tensor tokens)
    {
        using var _ = no_grad();
        var c = Config;
        long B = tokens.shape[0], T = tokens.shape[1];
        int H = c.Heads, hd = c.HeadDim, start = cache.Length;
        if (B != cache.Batch) throw new ArgumentException($"{B} rows but the cache has {cache.Batch} slots");
        if (start + T > cache.MaxSeq) throw new ArgumentException($"positions up to {start + T} exceed the cache's {cache.MaxSeq}");
        var pos = arange(start, start + T, ScalarType.Int64, Device).unsqueeze(0).expand(B, T);
        var (cos, sin) = RopeTables(pos);
        int tk = start + (int)T;
        // query t (absolute start+t) sees keys 0..start+t
        Tensor? allowed = T == 1 ? null
            : ones([T, tk], ScalarType.Bool, Device).tril(start).view(1, 1, T, tk);
        var x = Weights["model.embed_tokens.weight"].index_select(0, tokens.to(ScalarType.Int64).flatten()).view(B, T, c.Dim);
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var xn = RmsNorm(x, Weights[p + "input_layernorm.weight"]);
            var q = ApplyRope(Linear(l, "q_proj", xn).view(B, T, H, hd), cos, sin).transpose(1, 2);
            var k = ApplyRope(Linear(l, "k_proj", xn).view(B, T, H, hd), cos, sin).transpose(1, 2);
            var v = Linear(l, "v_proj", xn).view(B, T, H, hd).transpose(1, 2);
            cache.K[l].narrow(2, start, T).copy_(k);
            cache.V[l].narrow(2, start, T).copy_(v);
            var ao = Attend(q, cache.K[l].narrow(2, 0, tk), cache.V[l].narrow(2, 0, tk), allowed).transpose(1, 2).reshape(B, T, c.Dim);
            x = x + Linear(l, "o_proj", ao);
            var xn2 = RmsNorm(x, Weights[p + "post_attention_layernorm.weight"]);
            x = x + Linear(l, "down_proj", F.silu(Linear(l, "gate_proj", xn2)) * Linear(l, "up_proj", xn2));
        }
        cache.Length = tk;
        var last = RmsNorm(x.narrow(1, T - 1, 1).squeeze(1), Weights["model.norm.weight"]);        // (B,C)
        return F.linear(last, Weights["lm_head.weight"]);                                           // (B,V)
    }

    public void Dispose()
    {
        foreach (var w in Weights.Values) w.Dispose();
        foreach (var lo in Lora.Values) { lo.A.Dispose(); lo.B.Dispose(); }
    }
}
