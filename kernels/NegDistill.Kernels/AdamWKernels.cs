using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>AdamW, one thread per parameter. CPU twin: src/NegDistill.Core/Ops/AdamW.cs; both call
/// <see cref="NegDistill.Ops.AdamW.Update"/> so they round identically. Version 2 (<see cref="V2Kernel"/>) updates four
/// parameters per thread through 128-bit loads and stores where <see cref="Wide.Fits"/> holds: same bits.</summary>
public static class AdamWKernels
{
    public struct Hyper { public float Lr, Beta1, Beta2, Eps, Wd, Bc1, Bc2; }

    public static void Kernel(Index1D i, ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, Hyper h)
    {
        float mm = m[i], vv = v[i];
        p[i] = NegDistill.Ops.AdamW.Update(p[i], g[i], ref mm, ref vv, h.Lr, h.Beta1, h.Beta2, h.Eps, h.Wd, h.Bc1, h.Bc2);
        m[i] = mm; v[i] = vv;
    }

    public static void V2Kernel(Index1D i, ArrayView<Float4> p, ArrayView<Float4> g, ArrayView<Float4> m, ArrayView<Float4> v, Hyper h)
    {
        Float4 pp = p[i], gg = g[i], mm = m[i], vv = v[i];
        pp.X = NegDistill.Ops.AdamW.Update(pp.X, gg.X, ref mm.X, ref vv.X, h.Lr, h.Beta1, h.Beta2, h.Eps, h.Wd, h.Bc1, h.Bc2);
        pp.Y = NegDistill.Ops.AdamW.Update(pp.Y, gg.Y, ref mm.Y, ref vv.Y, h.Lr, h.Beta1, h.Beta2, h.Eps, h.Wd, h.Bc1, h.Bc2);
        pp.Z = NegDistill.Ops.AdamW.Update(pp.Z, gg.Z, ref mm.Z, ref vv.Z, h.Lr, h.Beta1, h.Beta2, h.Eps, h.Wd, h.Bc1, h.Bc2);
        pp.W = NegDistill.Ops.AdamW.Update(pp.W, gg.W, ref mm.W, ref vv.W, h.Lr, h.Beta1, h.Beta2, h.Eps, h.Wd, h.Bc1, h.Bc2);
        p[i] = pp; m[i] = mm; v[i] = vv;
    }

    public sealed class Launcher(Accelerator acc)
    {
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Hyper> _k =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Hyper>(Kernel);
        readonly Action<Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, Hyper> _k2 =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, ArrayView<Float4>, Hyper>(V2Kernel);

        public void Step(ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, long n, float lr, float b1, float b2, float eps, float wd, int t,
            Wide.Version version = Wide.Version.V2Float4)
        {
            var h = new Hyper { Lr = lr, Beta1 = b1, Beta2 = b2, Eps = eps, Wd = wd, Bc1 = 1f - MathF.Pow(b1, t), Bc2 = 1f - MathF.Pow(b2, t) };
            if (version == Wide.Version.V2Float4 && Wide.Fits(n, p, g, m, v)) _k2((int)(n / 4), Wide.As4(p, n), Wide.As4(g, n), Wide.As4(m, n), Wide.As4(v, n), h);
            else _k((int)n, p, g, m, v, h);
        }
    }
}
