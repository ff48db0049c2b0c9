using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>AdamW, one thread per parameter. CPU twin: src/NegDistill.Core/Ops/AdamW.cs; both call
/// <see cref="NegDistill.Ops.AdamW.Update"/> so they round identically.</summary>
public static class AdamWKernels
{
    public struct Hyper { public float Lr, Beta1, Beta2, Eps, Wd, Bc1, Bc2; }

    public static void Kernel(Index1D i, ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, Hyper h)
    {
        float mm = m[i], vv = v[i];
        p[i] = NegDistill.Ops.AdamW.Update(p[i], g[i], ref mm, ref vv, h.Lr, h.Beta1, h.Beta2, h.Eps, h.Wd, h.Bc1, h.Bc2);
        m[i] = mm; v[i] = vv;
    }

    public sealed class Launcher(Accelerator acc)
    {
        readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Hyper> _k =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, Hyper>(Kernel);

        public void Step(ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, long n, float lr, float b1, float b2, float eps, float wd, int t)
            => _k((int)n, p, g, m, v, new Hyper { Lr = lr, Beta1 = b1, Beta2 = b2, Eps = eps, Wd = wd, Bc1 = 1f - MathF.Pow(b1, t), Bc2 = 1f - MathF.Pow(b2, t) });
    }
}
