using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>SwiGLU gate, elementwise. CPU twin and the math: src/NegDistill.Core/Ops/SwiGlu.cs. Version 1 takes one
/// element per thread, version 2 four (<see cref="Float4"/>: 128-bit loads and stores, a quarter of the load
/// instructions and threads for the same bytes) where <see cref="Wide.Fits"/> holds; both give the same bits.
/// Napkin math at 16 × 256 × 11008 (45 M elements): forward 12 B, backward 28 B per element, 0.54 + 1.26 GB,
/// ≈ 0.11 + 0.26 ms at an H200's ~4.8 TB/s.</summary>
public static class SwiGluKernels
{
    static float Fwd(float g, float u) => g / (1f + MathF.Exp(-g)) * u;

    /// <summary>(du, dg) += the SwiGLU gradient at one element.</summary>
    static void Bwd(ref float dg, ref float du, float dh, float g, float u)
    {
        float s = 1f / (1f + MathF.Exp(-g));
        du += dh * g * s;
        dg += dh * u * s * (1f + g * (1f - s));
    }

    /// <summary>Version 1: one element per thread.</summary>
    public static void ForwardKernel(Index1D i, ArrayView<float> h, ArrayView<float> g, ArrayView<float> u) => h[i] = Fwd(g[i], u[i]);

    /// <summary>Version 2: four elements per thread through 128-bit loads and stores; each element by the same formula.</summary>
    public static void ForwardV2Kernel(Index1D i, ArrayView<Float4> h, ArrayView<Float4> g, ArrayView<Float4> u)
    {
        Float4 gv = g[i], uv = u[i];
        h[i] = new Float4(Fwd(gv.X, uv.X), Fwd(gv.Y, uv.Y), Fwd(gv.Z, uv.Z), Fwd(gv.W, uv.W));
    }

    public static void BackwardKernel(Index1D i, ArrayView<float> dg, ArrayView<float> du, ArrayView<float> dh, ArrayView<float> g, ArrayView<float> u)
    {
        float a = dg[i], b = du[i];
        Bwd(ref a, ref b, dh[i], g[i], u[i]);
        dg[i] = a; du[i] = b;
    }

    public static void BackwardV2Kernel(Index1D i, ArrayView<Float4> dg, ArrayView<Float4> du, ArrayView<Float4> dh, ArrayView<Float4> g, ArrayView<Float4> u)
    {
        Float4 a = dg[i], b = du[i], d = dh[i], gv = g[i], uv = u[i];
        Bwd(ref a.X, ref b.X, d.X, gv.X, uv.X);
        Bwd(ref a.Y, ref b.Y, d.Y, gv.Y, uv.Y);
        Bwd(ref a.Z, ref b.Z, d.Z, gv.Z, uv.Z);
        Bwd(ref a.W, ref b.W, d.W, gv.W, uv.W);
        dg[i] = a; du[i] = b;
    }

    public sealed class Launcher(Accelerator acc)
    {
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>> _fwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(ForwardKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> _bwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(BackwardKernel);
        readonly Action<Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>> _fwd2 =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>>(ForwardV2Kernel);
        readonly Action<Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>> _bwd2 =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>>(BackwardV2Kernel);

        public void Forward(ArrayView<float> h, ArrayView<float> g, ArrayView<float> u, long n, Wide.Version version = Wide.Version.V2Float4)
        {
            if (version == Wide.Version.V2Float4 && Wide.Fits(n, h, g, u)) _fwd2((int)(n / 4), Wide.As4(h, n), Wide.As4(g, n), Wide.As4(u, n));
            else _fwd((int)n, h, g, u);
        }

        public void Backward(ArrayView<float> dg, ArrayView<float> du, ArrayView<float> dh, ArrayView<float> g, ArrayView<float> u, long n,
            Wide.Version version = Wide.Version.V2Float4)
        {
            if (version == Wide.Version.V2Float4 && Wide.Fits(n, dg, du, dh, g, u))
                _bwd2((int)(n / 4), Wide.As4(dg, n), Wide.As4(du, n), Wide.As4(dh, n), Wide.As4(g, n), Wide.As4(u, n));
            else _bwd((int)n, dg, du, dh, g, u);
        }
    }
}
