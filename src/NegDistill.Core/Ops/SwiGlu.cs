using System.Numerics;
namespace NegDistill.Ops;

/// <summary>
/// SwiGLU gate of the LLaMA MLP: h = silu(g) ⊙ u, silu(g) = g·σ(g).
/// d silu/dg = σ(g)·(1 + g·(1 − σ(g))). The MLP is down(h) with g = gate(x), u = up(x).
/// CPU twin of kernels/NegDistill.Kernels/SwiGluKernels.cs.
/// </summary>
public static class SwiGlu
{
    public static T Sigmoid<T>(T x) where T : IFloatingPointIeee754<T> => T.One / (T.One + T.Exp(-x));

    /// <param name="h">(N,F)</param><param name="g">(N,F)</param><param name="u">(N,F)</param>
    public static void Forward<T>(Span<T> h, ReadOnlySpan<T> g, ReadOnlySpan<T> u, long n)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < n; i++) h[i] = g[i] * Sigmoid(g[i]) * u[i];
    }

    public static void Backward<T>(Span<T> dg, Span<T> du, ReadOnlySpan<T> dh, ReadOnlySpan<T> g, ReadOnlySpan<T> u, long n)
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
}
