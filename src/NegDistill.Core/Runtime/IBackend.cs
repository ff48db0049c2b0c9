namespace NegDistill.Runtime;

/// <summary>
/// The op contract shared by the two backends: the ILGPU kernels (kernels/) and the SIMD CPU twin
/// (<see cref="CpuBackend"/>). The model is written once against this interface.
///
/// Conventions, as in llm.c: row-major tensors; N = B·T token rows; C channels; forward ops
/// overwrite their outputs; backward ops ACCUMULATE (+=) into input gradients and parameter
/// gradients, so residual branches compose without extra adds and callers zero gradients once.
/// Each op's math and CPU implementation is in src/NegDistill.Core/Ops/&lt;Family&gt;.cs; the kernels
/// are in kernels/NegDistill.Kernels/&lt;Family&gt;Kernels.cs.
/// </summary>
public interface IBackend : IDisposable
{
    string Name { get; }
    /// <summary>The KV cache's element type where the user leaves it to the engine (`--kv-cache auto`):
    /// BF16 on a GPU (half the bytes, twice the slots; the decode kernels read 16-bit rows), F32 on the
    /// CPU twin (its exact reference path).</summary>
    DType DefaultKvCache { get; }

    // ---- memory ---------------------------------------------------------------------------
    Tensor Alloc(string name, DType dtype, params int[] shape);           // zero-filled
    /// <summary>A window of <paramref name="t"/> starting at element offset, sharing its storage.</summary>
    Tensor View(Tensor t, long offset, params int[] shape);
    void Upload(Tensor t, ReadOnlySpan<float> src);                         // F32; F16/BF16 are narrowed
    void Upload(Tensor t, ReadOnlySpan<int> src);                           // I32
    void UploadRaw16(Tensor t, ReadOnlySpan<ushort> src);                   // F16/BF16 words as stored
    void Download(Tensor t, Span<float> dst);                               // F32 (16-bit kinds widened)
    void Download(Tensor t, Span<int> dst);
    void DownloadRaw16(Tensor t, Span<ushort> dst);
    void Fill(Tensor t, float value);
    /// <summary>t[i] ← Normal(0, std) draw i of (seed), narrowed for F16/BF16: random weights made where
    /// they live, without a host round-trip (a 7B model's 6.7 G values on a GPU in milliseconds). The CPU
    /// twin draws exactly <see cref="Model.Init.Normal"/>'s values; the kernels draw
    /// <see cref="Model.Init.NormalAt32"/>, its fp32 form (equal within ~1e-6 relative, not bit for bit).</summary>
    void FillNormal(Tensor t, float std, ulong seed);
    void Copy(Tensor dst, Tensor src);
    void Synchronize();

    // ---- elementwise ------------------------------------------------------------------------
    /// <summary>y[i] += a · x[i] for i &lt; n.</summary>
    void Axpy(Tensor y, Tensor x, float a, long n);
    /// <summary>y[i] *= a for i &lt; n.</summary>
    void Scale(Tensor y, float a, long n);
    /// <summary>Σ x[i] over i &lt; n (losses), with a fixed summation order.</summary>
    double Sum(Tensor x, long n);
    /// <summary>Σ x[i]² over i &lt; n, accumulated in double on the host side of the reduction.</summary>
    double SumSquares(Tensor x, long n);
    /// <summary>True if any of the first n values is NaN or ±Inf.</summary>
    bool HasNonFinite(Tensor x, long n);

    // ---- matmul: the single entry point (tensor-core versions swap in here) -------------------
    /// <summary>C(M,N) = alpha·op(A)(M,K)·op(B)(K,N) + beta·C. A and C are F32; B may be F32, F16 or
    /// BF16 (widened on load). op(X) = Xᵀ when the flag is set (X then stored K×M or N×K).
    /// beta = 0 overwrites C.</summary>
    void MatMul(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, float alpha = 1f, float beta = 0f);

    // ---- layers ------------------------------------------------------------------------------
    void EmbeddingForward(Tensor outp, Tensor tokens, Tensor wte, int n, int c);            // (N,C) ← wte(V,C)[tokens(N)]
    void EmbeddingBackward(Tensor dwte, Tensor tokens, Tensor dout, int n, int c);          // dwte(V,C) += scatter dout(N,C)

    void RmsNormForward(Tensor outp, Tensor rstd, Tensor x, Tensor w, int n, int c, float eps);   // out(N,C), rstd(N)
    /// <summary>dx(N,C) +=, dw(C) +=; dw null: the weight is frozen and its gradient is not computed.</summary>
    void RmsNormBackward(Tensor dx, Tensor? dw, Tensor dout, Tensor x, Tensor w, Tensor rstd, int n, int c);

    /// <summary>In-place rotate-half RoPE on x(N, H·hd) with positions pos(N); inverse = true applies
    /// the transposed rotation (the backward).</summary>
    void Rope(Tensor x, Tensor pos, int n, int nHeads, int headDim, float theta, bool inverse);

    /// <summary>Causal attention, flash form. q,k,v,out: (B,T,H·hd); keyMask: (B,T) 1 = real token, 0 =
    /// padding (never attended to); lse: (B,H,T) each query's log Σ exp(score) over the keys it sees (−∞, with
    /// out = 0, when it sees none), all the backward needs besides out: no (B,H,T,T) tensor is kept.</summary>
    void AttentionForward(Tensor outp, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyMask, int b, int t, int nHeads, int headDim);
    /// <summary>Recomputes the probabilities from lse; accumulates into dq, dk, dv.</summary>
    void AttentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor outp, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyMask,
        int b, int t, int nHeads, int headDim);

    // ---- KV-cache inference (math: Ops/KvCache.cs, Ops/Sampling.cs) --------------------------
    // A forward is R rows, row r = one token at absolute position rowPos[r] (I32) of a sequence whose
    // positions lie in the cache pool (P,C) as rowMap[r] = (pb, L, ob) (R,3, I32) says: position j at cache
    // row pb + j for j < L (a shared prefix), at ob + j − L for j ≥ L (Ops/KvCache.cs).
    /// <summary>kCache, vCache (P,C) at the cache row of (rowMap_r, pos_r) ← k, v (R,C); the caches are F32, or
    /// BF16/F16 (narrowed as written: half the bytes).</summary>
    void CacheWrite(Tensor kCache, Tensor vCache, Tensor k, Tensor v, Tensor rowMap, Tensor rowPos, int r, int c);
    /// <summary>out (R,C): row r, head h attends to its sequence's positions 0..rowPos[r] inclusive
    /// (max-subtracted softmax, scale 1/√hd), so prefill rows and decode rows are the same op;
    /// <paramref name="maxContext"/> bounds rowPos + 1 (the kernels' scratch).</summary>
    void CachedAttention(Tensor outp, Tensor q, Tensor kCache, Tensor vCache, Tensor rowMap, Tensor rowPos, int r, int maxContext, int nHeads, int headDim);
    /// <summary>dst (R2,C) ← src[rows (R2, I32), :].</summary>
    void GatherRows(Tensor dst, Tensor src, Tensor rows, int r2, int c);
    /// <summary>One token per row of logits (R,V, read only) into tokens (R, I32; −1 for NaN rows) and
    /// logProbs (R) = log softmax(z)[token] at temperature 1. temperature ≤ 0: arg-max (lowest index on
    /// ties); else softmax(z/temperature) cut by top-k (k ≤ 0 or ≥ V: off) then top-p (p ≤ 0 or ≥ 1: off),
    /// ties at the cut kept, drawn with CounterRng.Uniform(seed, counter): rowSeed (R,2, I32) holds each
    /// row's 64-bit seed as (low, high) words, rowCounter (R, I32) its counter.</summary>
    void SampleRows(Tensor logits, Tensor tokens, Tensor logProbs, Tensor rowSeed, Tensor rowCounter, int r, int v, float temperature, int topK, float topP);

    void SwiGluForward(Tensor h, Tensor gate, Tensor up, long n);                            // h = silu(gate) ⊙ up
    void SwiGluBackward(Tensor dgate, Tensor dup, Tensor dh, Tensor gate, Tensor up, long n);

    /// <summary>y = x ⊙ mask/(1−p), mask drawn from <see cref="CounterRng"/>(seed, i); p = 0 copies.</summary>
    void DropoutForward(Tensor y, Tensor x, float p, ulong seed, long n);
    /// <summary>dx += dy ⊙ mask/(1−p) with the same mask as the forward.</summary>
    void DropoutBackward(Tensor dx, Tensor dy, float p, ulong seed, long n);

    /// <summary>Fused softmax cross-entropy over logits(N,V). losses[i] = logsumexp − z[target]
    /// (0 where target &lt; 0). When computeGrad, the logits are overwritten with
    /// weight·(softmax − onehot) (zero rows where target &lt; 0), so no second N×V buffer exists.</summary>
    void CrossEntropyFused(Tensor logits, Tensor losses, Tensor targets, int n, int v, double weight, bool computeGrad);

    /// <summary>NCE (method.md, Step 2; math in Ops/Nce.cs): per row kl[i] = Σ_v p_neg·(log(p_neg+1e-7) −
    /// log(p_nat+1e-7)) with p = softmax(z/temperature). zNat, zNeg: (N,V); kl: (N).</summary>
    void NceKl(Tensor zNat, Tensor zNeg, Tensor kl, int n, int v, float temperature);
    /// <summary>NCE's fused calibrated distillation over student logits zs(N,V): lossCe[i] = logsumexp(zs) −
    /// zs[y], lossKd[i] = −τ²·rowWeight[i]·Σ_v p_nat·log softmax(zs/τ) (both 0 where target &lt; 0). When
    /// computeGrad, zs is overwritten with dL/dzs for L = (1−a)·ceScale·Σ ce + a·kdScale·Σ kd (zero rows
    /// where target &lt; 0), so no second N×V buffer exists. zNat: (N,V); targets, rowWeight: (N).</summary>
    void NceDistillFused(Tensor zs, Tensor zNat, Tensor targets, Tensor rowWeight, Tensor lossCe, Tensor lossKd, int n, int v,
        float temperature, float a, double ceScale, double kdScale, bool computeGrad);

    /// <summary>AdamW (decoupled weight decay, bias-corrected), step t ≥ 1, on the first n values.</summary>
    void AdamW(Tensor param, Tensor grad, Tensor m, Tensor v, long n, float lr, float beta1, float beta2, float eps, float weightDecay, int t);

    // ---- NAT dynamic integration unit (method.md Step 1.2; math: Ops/Integration.cs) ----------
    /// <summary>Per row of q, kPos, kNeg, uPos, uNeg (N,D; u before GELU): aNeg(N) = softmax weight of
    /// the negative branch of (q·k_i)·invTemp, α = 2β·aNeg − β, mix(N,D) = (1−α)·GELU(uPos) + α·GELU(uNeg).
    /// The caller adds mix·U2ᵀ to the projection output.</summary>
    void IntegrationForward(Tensor mix, Tensor aNeg, Tensor q, Tensor kPos, Tensor kNeg, Tensor uPos, Tensor uNeg, int n, int d, float beta, float invTemp);
    /// <summary>Backward of <see cref="IntegrationForward"/> given dmix(N,D); accumulates into dq, dkPos,
    /// dkNeg, duPos, duNeg (N,D).</summary>
    void IntegrationBackward(Tensor dq, Tensor dkPos, Tensor dkNeg, Tensor duPos, Tensor duNeg, Tensor dmix,
        Tensor q, Tensor kPos, Tensor kNeg, Tensor uPos, Tensor uNeg, Tensor aNeg, int n, int d, float beta, float invTemp);
}
