using System.Numerics;
using System.Runtime.InteropServices;
namespace NegDistill.Ops;

/// <summary>
/// AdamW (Loshchilov and Hutter), PyTorch's formulation: p ← p − lr·wd·p (decoupled decay), then
/// m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g², p ← p − lr · m̂ / (√v̂ + eps) with bias-corrected
/// m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ). CPU twin of kernels/NegDistill.Kernels/AdamWKernels.cs.
/// </summary>
public static class AdamW
{
    public static void Step<T>(Span<T> p, ReadOnlySpan<T> g, Span<T> m, Span<T> v, long n,
        float lr, float beta1, float beta2, float eps, float wd, int t) where T : unmanaged, IFloatingPointIeee754<T>
    {
        float bc1 = 1f - MathF.Pow(beta1, t), bc2 = 1f - MathF.Pow(beta2, t);
        if (typeof(T) == typeof(float))
        {
            Span<float> pf = MemoryMarshal.Cast<T, float>(p), mf = MemoryMarshal.Cast<T, float>(m), vf = MemoryMarshal.Cast<T, float>(v);
            ReadOnlySpan<float> gf = MemoryMarshal.Cast<T, float>(g);
            for (int i = 0; i < n; i++) pf[i] = Update(pf[i], gf[i], ref mf[i], ref vf[i], lr, beta1, beta2, eps, wd, bc1, bc2);
            return;
        }
        T l = T.CreateTruncating(lr), b1 = T.CreateTruncating(beta1), b2 = T.CreateTruncating(beta2), e = T.CreateTruncating(eps), w = T.CreateTruncating(wd);
        T c1 = T.One - T.Pow(b1, T.CreateTruncating(t)), c2 = T.One - T.Pow(b2, T.CreateTruncating(t));
        for (int i = 0; i < n; i++)
        {
            p[i] -= l * w * p[i];
            m[i] = b1 * m[i] + (T.One - b1) * g[i];
            v[i] = b2 * v[i] + (T.One - b2) * g[i] * g[i];
            p[i] -= l * (m[i] / c1) / (T.Sqrt(v[i] / c2) + e);
        }
    }

    /// <summary>One element; shared with the kernel so both round identically.</summary>
    public static float Update(float p, float g, ref float m, ref float v, float lr, float beta1, float beta2, float eps, float wd, float bc1, float bc2)
    {
        p -= lr * wd * p;
        m = beta1 * m + (1f - beta1) * g;
        v = beta2 * v + (1f - beta2) * g * g;
        float mhat = m / bc1, vhat = v / bc2;
        return p - lr * mhat / (MathF.Sqrt(vhat) + eps);
    }
}
