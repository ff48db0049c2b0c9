using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using NegDistill.Cpu;
namespace NegDistill.Ops;

/// <summary>
/// SwiGLU gate of the LLaMA MLP: h = silu(g) ⊙ u, silu(g) = g·σ(g).
/// d silu/dg = σ(g)·(1 + g·(1 − σ(g))). The MLP is down(h) with g = gate(x), u = up(x).
/// Element-wise, so the backend splits any range over threads without changing a bit. Float runs in
/// vectors of the widest accelerated width with <see cref="VecMath.Sigmoid{TV, TS}"/> (exp within 1.25 ulp;
/// the last n mod W elements go through a padded buffer and the same vector code, so an element's bits do not
/// depend on where a range starts); double (the fp64 oracle) is the scalar formula with Math.Exp.
/// CPU twin of kernels/NegDistill.Kernels/SwiGluKernels.cs.
/// </summary>
public static class SwiGlu
{
    public static T Sigmoid<T>(T x) where T : IFloatingPointIeee754<T> => T.One / (T.One + T.Exp(-x));

    /// <param name="h">(N,F)</param><param name="g">(N,F)</param><param name="u">(N,F)</param>
    public static void Forward<T>(Span<T> h, ReadOnlySpan<T> g, ReadOnlySpan<T> u, long n)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float))
        {
            var hf = MemoryMarshal.Cast<T, float>(h);
            var gf = MemoryMarshal.Cast<T, float>(g);
            var uf = MemoryMarshal.Cast<T, float>(u);
            if (Vector512.IsHardwareAccelerated) ForwardF<Vector512<float>, V512>(hf, gf, uf, (int)n);
            else if (Vector256.IsHardwareAccelerated) ForwardF<Vector256<float>, V256>(hf, gf, uf, (int)n);
            else ForwardF<Vector128<float>, V128>(hf, gf, uf, (int)n);
            return;
        }
        ForwardScalar(h, g, u, n);
    }

    /// <summary>The scalar formula, element by element: the double path, and the reference the float vectors are tested against.</summary>
    public static void ForwardScalar<T>(Span<T> h, ReadOnlySpan<T> g, ReadOnlySpan<T> u, long n)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < n; i++) h[i] = g[i] * Sigmoid(g[i]) * u[i];
    }

    /// <param name="dg">(N,F) +=</param><param name="du">(N,F) +=</param><param name="dh">(N,F)</param>
    /// <param name="g">(N,F)</param><param name="u">(N,F)</param>
    public static void Backward<T>(Span<T> dg, Span<T> du, ReadOnlySpan<T> dh, ReadOnlySpan<T> g, ReadOnlySpan<T> u, long n)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float))
        {
            var dgf = MemoryMarshal.Cast<T, float>(dg);
            var duf = MemoryMarshal.Cast<T, float>(du);
            var dhf = MemoryMarshal.Cast<T, float>(dh);
            var gf = MemoryMarshal.Cast<T, float>(g);
            var uf = MemoryMarshal.Cast<T, float>(u);
            if (Vector512.IsHardwareAccelerated) BackwardF<Vector512<float>, V512>(dgf, duf, dhf, gf, uf, (int)n);
            else if (Vector256.IsHardwareAccelerated) BackwardF<Vector256<float>, V256>(dgf, duf, dhf, gf, uf, (int)n);
            else BackwardF<Vector128<float>, V128>(dgf, duf, dhf, gf, uf, (int)n);
            return;
        }
        BackwardScalar(dg, du, dh, g, u, n);
    }

    /// <summary>The scalar backward: the double path, and the float reference.</summary>
    public static void BackwardScalar<T>(Span<T> dg, Span<T> du, ReadOnlySpan<T> dh, ReadOnlySpan<T> g, ReadOnlySpan<T> u, long n)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < n; i++)
        {
            T s = Sigmoid(g[i]);
            T silu = g[i] * s;
            du[i] += dh[i] * silu;
            dg[i] += dh[i] * u[i] * s * (T.One + g[i] * (T.One - s));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void ForwardF<TV, TS>(Span<float> h, ReadOnlySpan<float> g, ReadOnlySpan<float> u, int n) where TV : unmanaged where TS : IVecF<TV>
    {
        int w = TS.Count, full = n / w * w, rem = n - full;
        fixed (float* ph = h) fixed (float* pg = g) fixed (float* pu = u)
        {
            for (int i = 0; i < full; i += w) TS.Store(ph + i, ForwardV<TV, TS>(TS.Load(pg + i), TS.Load(pu + i)));
            if (rem == 0) return;
            float* tg = stackalloc float[16], tu = stackalloc float[16], th = stackalloc float[16];
            for (int j = 0; j < w; j++) { tg[j] = j < rem ? pg[full + j] : 0f; tu[j] = j < rem ? pu[full + j] : 0f; }
            TS.Store(th, ForwardV<TV, TS>(TS.Load(tg), TS.Load(tu)));
            for (int j = 0; j < rem; j++) ph[full + j] = th[j];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static TV ForwardV<TV, TS>(TV g, TV u) where TV : unmanaged where TS : IVecF<TV>
        => TS.Mul(TS.Mul(g, VecMath.Sigmoid<TV, TS>(g)), u);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void BackwardF<TV, TS>(Span<float> dg, Span<float> du, ReadOnlySpan<float> dh, ReadOnlySpan<float> g, ReadOnlySpan<float> u, int n)
        where TV : unmanaged where TS : IVecF<TV>
    {
        int w = TS.Count, full = n / w * w, rem = n - full;
        fixed (float* pdg = dg) fixed (float* pdu = du) fixed (float* pdh = dh) fixed (float* pg = g) fixed (float* pu = u)
        {
            for (int i = 0; i < full; i += w) BackwardV<TV, TS>(pdg + i, pdu + i, pdh + i, pg + i, pu + i);
            if (rem == 0) return;
            float* t = stackalloc float[5 * 16];
            for (int j = 0; j < w; j++)
            {
                bool on = j < rem;
                t[j] = on ? pdg[full + j] : 0f; t[16 + j] = on ? pdu[full + j] : 0f; t[32 + j] = on ? pdh[full + j] : 0f;
                t[48 + j] = on ? pg[full + j] : 0f; t[64 + j] = on ? pu[full + j] : 0f;
            }
            BackwardV<TV, TS>(t, t + 16, t + 32, t + 48, t + 64);
            for (int j = 0; j < rem; j++) { pdg[full + j] = t[j]; pdu[full + j] = t[16 + j]; }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void BackwardV<TV, TS>(float* dg, float* du, float* dh, float* g, float* u) where TV : unmanaged where TS : IVecF<TV>
    {
        TV vg = TS.Load(g), vdh = TS.Load(dh), one = TS.Splat(1f);
        TV s = VecMath.Sigmoid<TV, TS>(vg);
        TS.Store(du, TS.Add(TS.Load(du), TS.Mul(vdh, TS.Mul(vg, s))));
        TV dsilu = TS.Mul(TS.Mul(TS.Mul(vdh, TS.Load(u)), s), TS.Add(one, TS.Mul(vg, TS.Sub(one, s))));
        TS.Store(dg, TS.Add(TS.Load(dg), dsilu));
    }
}
