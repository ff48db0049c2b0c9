// BenchTorchModels: the TorchSharp side of `bench` (Bench.cs), written the way a speed-minded PyTorch user
// would write it, next to the parity model (TorchLlama, TorchNce), which is written for exactness:
//   * EngineToTorch  copies a NegDistill LlamaModel (base weights, LoRA A/B) into a float32 TorchLlama, the
//                    LoRA factors as torch Parameters so torch.optim.AdamW can own them;
//   * SdpaLlama      a LLaMA forward over TorchLlama's weights with F.scaled_dot_product_attention (libtorch's
//                    fused CPU flash attention, causal, forward and backward), LoRA dropout as in the engine,
//                    RoPE tables computed once, and F.cross_entropy; plus a KV-cache decoder (precomputed
//                    RoPE table, cache written in place, SDPA over the filled prefix, greedy argmax);
//   * LeanNce        NCE's loss op by op with nothing computed twice (one teacher softmax, one student
//                    log_softmax at τ = 1, shared by KD and CE), the student gradient by autograd.
// Only TorchLlama's public pieces are reused (weights, RmsNorm, RopeTables, ApplyRope, the Lora dictionary).
// Forward methods allocate: call them inside torch.NewDisposeScope().
using NegDistill.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace NegDistill.TorchReference;

public static class EngineToTorch
{
    public static TorchLlamaConfig Config(LlamaConfig c, int maxSeq) =>
        new(c.Dim, c.Layers, c.Heads, c.FfnDim, c.Vocab, maxSeq, c.NormEps, c.RopeTheta);

    /// <summary>A float32 TorchLlama holding copies of the engine model's base weights.</summary>
    public static TorchLlama Model(LlamaModel m)
    {
        var t = new TorchLlama(Config(m.Config, m.Config.MaxSeq), ScalarType.Float32);
        var src = new Dictionary<string, Tensor>();
        try
        {
            foreach (var p in m.BaseParameters) src[p.Name] = Copy(m, p.W);
            t.LoadWeights(src, "engine model");
        }
        finally { foreach (var x in src.Values) x.Dispose(); }
        return t;
    }

    /// <summary>Puts the engine's LoRA adapters into <paramref name="t"/> as trainable Parameters (copies of A
    /// and B, scale alpha/r from <paramref name="cfg"/>, the settings the adapters were built with) and
    /// returns them in the engine's order (layer, projection, A then B).</summary>
    public static List<Parameter> Lora(LlamaModel m, TorchLlama t, LoraConfig cfg)
    {
        var list = new List<Parameter>();
        foreach (var ((l, p), ad) in m.Adapters.OrderBy(a => a.Key.Layer).ThenBy(a => a.Key.Proj))
        {
            if (ad is not LoraAdapter lo) throw new ArgumentException($"adapter on layer {l} {p} is not a LoRA");
            var a = new Parameter(Copy(m, lo.A.W), true);
            var b = new Parameter(Copy(m, lo.B.W), true);
            t.Lora[(l, p.ToString())] = new TorchLora(a, b, cfg.Scale);
            list.Add(a); list.Add(b);
        }
        return list;
    }

    /// <summary>A float32 torch tensor with the contents and shape of an engine tensor.</summary>
    public static Tensor Copy(LlamaModel m, NegDistill.Runtime.Tensor x)
    {
        var host = new float[x.Length];
        m.Ops.Download(x, host);
        return tensor(host, x.Shape.Select(s => (long)s).ToArray(), ScalarType.Float32).DetachFromDisposeScope();
    }
}

/// <summary>LLaMA over TorchLlama's weights with SDPA attention (no padding: every sequence is full).</summary>
public sealed class SdpaLlama(TorchLlama m, double loraDropout)
{
    public TorchLlama M { get; } = m;
    Tensor? _cos, _sin;
    long _ropeT = -1;

    Tensor Linear(int l, string proj, Tensor x, bool training)
    {
        var y = F.linear(x, M.Weights[TorchLlamaConfig.ProjWeightName(l, proj)]);
        if (!M.Lora.TryGetValue((l, proj), out var lo)) return y;
        var xd = training && loraDropout > 0 ? F.dropout(x, loraDropout, true) : x;
        return y.add_(F.linear(F.linear(xd, lo.A), lo.B), lo.Scale);
    }

    /// <summary>cos/sin (1,T,hd/2) for positions 0..T−1, computed once per T and kept.</summary>
    (Tensor Cos, Tensor Sin) Rope(long t)
    {
        if (t != _ropeT)
        {
            _cos?.Dispose(); _sin?.Dispose();
            using var _ = NewDisposeScope();
            var (c, s) = M.RopeTables(arange(t, ScalarType.Int64).unsqueeze(0));
            (_cos, _sin, _ropeT) = (c.contiguous().DetachFromDisposeScope(), s.contiguous().DetachFromDisposeScope(), t);
        }
        return (_cos!, _sin!);
    }

    /// <summary>Logits (B,T,V) of unpadded sequences tokens (B,T) int64.</summary>
    public Tensor Logits(Tensor tokens, bool training)
    {
        var c = M.Config;
        long B = tokens.shape[0], T = tokens.shape[1];
        int H = c.Heads, hd = c.HeadDim;
        var (cos, sin) = Rope(T);
        var x = M.Weights["model.embed_tokens.weight"].index_select(0, tokens.flatten()).view(B, T, c.Dim);
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var xn = M.RmsNorm(x, M.Weights[p + "input_layernorm.weight"]);
            var q = TorchLlama.ApplyRope(Linear(l, "q_proj", xn, training).view(B, T, H, hd), cos, sin).transpose(1, 2);
            var k = TorchLlama.ApplyRope(Linear(l, "k_proj", xn, training).view(B, T, H, hd), cos, sin).transpose(1, 2);
            var v = Linear(l, "v_proj", xn, training).view(B, T, H, hd).transpose(1, 2);
            var ao = F.scaled_dot_product_attention(q, k, v, is_casual: true).transpose(1, 2).reshape(B, T, c.Dim);
            x = x + Linear(l, "o_proj", ao, training);
            var xn2 = M.RmsNorm(x, M.Weights[p + "post_attention_layernorm.weight"]);
            x = x + Linear(l, "down_proj", F.silu(Linear(l, "gate_proj", xn2, training)) * Linear(l, "up_proj", xn2, training), training);
        }
        return F.linear(M.RmsNorm(x, M.Weights["model.norm.weight"]), M.Weights["lm_head.weight"]);
    }

    /// <summary>Mean next-token cross-entropy over targets ≥ 0 (targets (B,T) int64, −1 = no loss).</summary>
    public static Tensor Loss(Tensor logits, Tensor targets) =>
        F.cross_entropy(logits.view(-1, logits.shape[^1]), targets.view(-1), ignore_index: -1);
}

/// <summary>Greedy KV-cache decoding of unpadded prompts of one length over TorchLlama's weights (no grad):
/// a RoPE table for every position computed once, per-layer (B,H,Tmax,hd) caches written in place, SDPA
/// over the filled prefix (causal within the prefill, unmasked for a single new token).</summary>
public sealed class SdpaDecoder : IDisposable
{
    readonly TorchLlama _m;
    readonly Tensor _cos, _sin;                 // (Tmax, hd/2)
    readonly Tensor[] _k, _v;
    public int Batch { get; }
    public int MaxSeq { get; }

    public SdpaDecoder(TorchLlama m, int batch, int maxSeq)
    {
        (_m, Batch, MaxSeq) = (m, batch, maxSeq);
        var c = m.Config;
        using (var _ = NewDisposeScope())
        {
            var (cs, sn) = m.RopeTables(arange(maxSeq, ScalarType.Int64).unsqueeze(0));
            _cos = cs.squeeze(0).contiguous().DetachFromDisposeScope();
            _sin = sn.squeeze(0).contiguous().DetachFromDisposeScope();
        }
        _k = new Tensor[c.Layers]; _v = new Tensor[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            _k[l] = zeros([batch, c.Heads, maxSeq, c.HeadDim], m.DType).DetachFromDisposeScope();
            _v[l] = zeros([batch, c.Heads, maxSeq, c.HeadDim], m.DType).DetachFromDisposeScope();
        }
    }

    Tensor Linear(int l, string proj, Tensor x)
    {
        var y = F.linear(x, _m.Weights[TorchLlamaConfig.ProjWeightName(l, proj)]);
        return _m.Lora.TryGetValue((l, proj), out var lo) ? y.add_(F.linear(F.linear(x, lo.A), lo.B), lo.Scale) : y;
    }

    /// <summary>tokens (B,T) int64 at positions start..start+T−1; returns the last position's logits (B,V).</summary>
    Tensor Forward(Tensor tokens, int start)
    {
        var c = _m.Config;
        long B = tokens.shape[0], T = tokens.shape[1];
        int H = c.Heads, hd = c.HeadDim, tk = start + (int)T;
        var cos = _cos.narrow(0, start, T).unsqueeze(0); var sin = _sin.narrow(0, start, T).unsqueeze(0);   // (1,T,hd/2)
        var x = _m.Weights["model.embed_tokens.weight"].index_select(0, tokens.flatten()).view(B, T, c.Dim);
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var xn = _m.RmsNorm(x, _m.Weights[p + "input_layernorm.weight"]);
            var q = TorchLlama.ApplyRope(Linear(l, "q_proj", xn).view(B, T, H, hd), cos, sin).transpose(1, 2);
            var k = TorchLlama.ApplyRope(Linear(l, "k_proj", xn).view(B, T, H, hd), cos, sin).transpose(1, 2);
            var v = Linear(l, "v_proj", xn).view(B, T, H, hd).transpose(1, 2);
            _k[l].narrow(2, start, T).copy_(k);
            _v[l].narrow(2, start, T).copy_(v);
            // a prefill from position 0 is plain causal attention; one new token sees every cached key
            if (start != 0 && T != 1) throw new ArgumentException("SdpaDecoder feeds a prompt at position 0, then one token at a time");
            var ao = F.scaled_dot_product_attention(q, _k[l].narrow(2, 0, tk), _v[l].narrow(2, 0, tk), is_casual: T > 1)
                .transpose(1, 2).reshape(B, T, c.Dim);
            x = x + Linear(l, "o_proj", ao);
            var xn2 = _m.RmsNorm(x, _m.Weights[p + "post_attention_layernorm.weight"]);
            x = x + Linear(l, "down_proj", F.silu(Linear(l, "gate_proj", xn2)) * Linear(l, "up_proj", xn2));
        }
        var last = _m.RmsNorm(x.narrow(1, T - 1, 1).squeeze(1), _m.Weights["model.norm.weight"]);
        return F.linear(last, _m.Weights["lm_head.weight"]);
    }

    /// <summary>Greedy continuation of prompts (B,P) int64: newTokens tokens per row, (B, newTokens) int64.</summary>
    public long[,] Generate(Tensor prompts, int newTokens)
    {
        using var _ = inference_mode();
        long B = prompts.shape[0];
        int pLen = (int)prompts.shape[1];
        if (pLen + newTokens - 1 > MaxSeq) throw new ArgumentException($"{pLen} + {newTokens} tokens exceed the cache of {MaxSeq}");
        var outp = new long[B, newTokens];
        using var scope = NewDisposeScope();
        var next = Forward(prompts, 0).argmax(-1);                                  // (B)
        for (int i = 0; ; i++)
        {
            var host = next.data<long>().ToArray();
            for (int b = 0; b < B; b++) outp[b, i] = host[b];
            if (i == newTokens - 1) break;
            using var step = NewDisposeScope();
            next = Forward(next.view(B, 1), pLen + i).argmax(-1).MoveToOuterDisposeScope();
        }
        return outp;
    }

    public void Dispose()
    {
        _cos.Dispose(); _sin.Dispose();
        foreach (var t in _k.Concat(_v)) t.Dispose();
    }
}

/// <summary>NCE's loss (method.md Step 2: CE over the rows with a next-token target, KD over the attention
/// mask) op by op in TorchSharp, each quantity computed once; the student gradient by autograd on <c>zs</c>.</summary>
public static class LeanNce
{
    /// <param name="zs">(B,T,V) student logits, requires grad</param><param name="zNat">(B,T,V)</param>
    /// <param name="zNeg">(B,T,V)</param><param name="targets">(B,T) int64, −1 = no next token</param><param name="mask">(B,T) float attention mask</param>
    public static Tensor Loss(Tensor zs, Tensor zNat, Tensor zNeg, Tensor targets, Tensor mask, double a, double temperature)
    {
        Tensor pNat, w;
        using (no_grad())
        {
            pNat = F.softmax(temperature == 1 ? zNat : zNat / temperature, -1);
            var pNeg = F.softmax(temperature == 1 ? zNeg : zNeg / temperature, -1);
            var kl = (pNeg * ((pNeg + TorchNce.Epsilon).log_() - (pNat + TorchNce.Epsilon).log_())).sum(-1);      // (B,T)
            var beta = ((kl * mask).sum(-1) / mask.sum(-1).clamp_min(1)).tanh_();                                // (B)
            w = (beta.unsqueeze(-1) + 0.5) * mask;                                                               // (B,T): m_t (0.5 + β_b)
        }
        var lq = F.log_softmax(temperature == 1 ? zs : zs / temperature, -1);
        var kd = (-(temperature * temperature) * (pNat * lq).sum(-1) * w).sum() / mask.sum().clamp_min(1);
        var lp = temperature == 1 ? lq : F.log_softmax(zs, -1);
        var valid = targets.ge(0).to(zs.dtype);
        var ce = -(lp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1) * valid).sum() / valid.sum().clamp_min(1);   // nll: N values gathered
        return ce * (1 - a) + kd * a;
    }
}
