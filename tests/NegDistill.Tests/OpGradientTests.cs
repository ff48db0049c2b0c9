using NegDistill.Cpu;
using NegDistill.Model;
using NegDistill.Ops;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>
/// Every op's backward against central finite differences, in fp64 on the CPU twin.
/// Scalar probe: L = Σ R ⊙ f(inputs) with a fixed random R, so dL/dout = R.
/// Tolerance: central differences with h = 1e-6 have truncation error O(h²·f''') ≈ 1e-12 and
/// rounding error O(eps·|L|/h) ≈ 1e-10 for |L| ~ 1; we allow 1e-7 absolute + 1e-6 relative.
/// </summary>
[TestFixture]
public class OpGradientTests
{
    const double H = 1e-6, Atol = 1e-7, Rtol = 1e-6;

    static double[] Fd(double[] x, Func<double> loss) => TestUtil.FiniteDiff(x, loss, H);

    static double Dot(double[] a, double[] b) => TestUtil.Dot(a, b);

    [Test]
    public void RmsNorm_Backward()
    {
        int n = 3, c = 8;
        var x = TestUtil.RandD(n * c, 1); var w = TestUtil.RandD(c, 2); var r = TestUtil.RandD(n * c, 3);
        double L() { var y = new double[n * c]; var rs = new double[n]; RmsNorm.Forward<double>(y, rs, x, w, n, c, 1e-6); return Dot(y, r); }
        var y0 = new double[n * c]; var rstd = new double[n];
        RmsNorm.Forward<double>(y0, rstd, x, w, n, c, 1e-6);
        var dx = new double[n * c]; var dw = new double[c];
        RmsNorm.Backward<double>(dx, dw, r, x, w, rstd, n, c);
        TestUtil.Close(Fd(x, L), dx, Atol, Rtol, "dx");
        TestUtil.Close(Fd(w, L), dw, Atol, Rtol, "dw");
    }

    [Test]
    public void Rope_BackwardIsTheTransposedRotation()
    {
        int n = 4, h = 2, hd = 8;
        var x = TestUtil.RandD(n * h * hd, 4); var r = TestUtil.RandD(n * h * hd, 5);
        int[] pos = [0, 1, 5, 37];
        double L() { var y = (double[])x.Clone(); Rope.Apply<double>(y, pos, n, h, hd, 10000f, false); return Dot(y, r); }
        var dx = (double[])r.Clone();
        Rope.Apply<double>(dx, pos, n, h, hd, 10000f, true);
        TestUtil.Close(Fd(x, L), dx, Atol, Rtol, "dx");
    }

    [Test]
    public void Attention_Backward_WithPaddingMask()
    {
        int b = 2, t = 5, h = 2, hd = 4, c = h * hd;
        var q = TestUtil.RandD(b * t * c, 6); var k = TestUtil.RandD(b * t * c, 7); var v = TestUtil.RandD(b * t * c, 8);
        var r = TestUtil.RandD(b * t * c, 9);
        double[] mask = [1, 1, 1, 1, 1, /* row 2: left pad then right pad */ 0, 1, 1, 1, 0];
        double L() { var o = new double[b * t * c]; var lse = new double[b * h * t]; Attention.Forward<double>(o, lse, q, k, v, mask, b, t, h, hd); return Dot(o, r); }
        var o0 = new double[b * t * c]; var l0 = new double[b * h * t];
        Attention.Forward<double>(o0, l0, q, k, v, mask, b, t, h, hd);
        var dq = new double[q.Length]; var dk = new double[k.Length]; var dv = new double[v.Length];
        Attention.Backward<double>(dq, dk, dv, r, l0, q, k, v, mask, b, t, h, hd);
        TestUtil.Close(Fd(q, L), dq, Atol, Rtol, "dq");
        TestUtil.Close(Fd(k, L), dk, Atol, Rtol, "dk");
        TestUtil.Close(Fd(v, L), dv, Atol, Rtol, "dv");
        // the padded key (row 1, position 0) is never attended to: moving it changes nothing
        for (int d = 0; d < hd * h; d++) Assert.That(dk[(1 * t + 0) * c + d], Is.EqualTo(0.0), "dk of a padded key");
        for (int d = 0; d < hd * h; d++) Assert.That(dv[(1 * t + 0) * c + d], Is.EqualTo(0.0), "dv of a padded key");
    }

    [Test]
    public void SwiGlu_Backward()
    {
        int n = 10;
        var g = TestUtil.RandD(n, 10, 3); var u = TestUtil.RandD(n, 11); var r = TestUtil.RandD(n, 12);
        double L() { var hh = new double[n]; SwiGlu.Forward<double>(hh, g, u, n); return Dot(hh, r); }
        var dg = new double[n]; var du = new double[n];
        SwiGlu.Backward<double>(dg, du, r, g, u, n);
        TestUtil.Close(Fd(g, L), dg, Atol, Rtol, "dg");
        TestUtil.Close(Fd(u, L), du, Atol, Rtol, "du");
    }

    [Test]
    public void Dropout_Backward_UsesTheForwardMask()
    {
        int n = 64;
        var x = TestUtil.RandD(n, 13); var r = TestUtil.RandD(n, 14);
        double L() { var y = new double[n]; Dropout.Forward<double>(y, x, 0.3f, 42, n); return Dot(y, r); }
        var dx = new double[n];
        Dropout.Backward<double>(dx, r, 0.3f, 42, n);
        TestUtil.Close(Fd(x, L), dx, Atol, Rtol, "dx");
        Assert.That(dx.Count(v => v == 0), Is.InRange(5, 40), "about 30% dropped");
    }

    [Test]
    public void CrossEntropy_FusedGradient()
    {
        int n = 4, v = 7;
        var z = TestUtil.RandD(n * v, 15, 3);
        int[] y = [3, -1, 0, 6];
        const double w = 0.25;
        double L() { var zz = (double[])z.Clone(); var l = new double[n]; CrossEntropy.Fused<double>(zz, l, y, n, v, w, false); return w * l.Sum(); }
        var g = (double[])z.Clone(); var losses = new double[n];
        CrossEntropy.Fused<double>(g, losses, y, n, v, w, true);
        TestUtil.Close(Fd(z, L), g, Atol, Rtol, "dlogits");
        Assert.That(losses[1], Is.EqualTo(0.0), "ignored row has no loss");
    }

    [Test]
    public void Embedding_Backward()
    {
        int vocab = 5, c = 3, n = 4;
        var wte = TestUtil.RandD(vocab * c, 16); var r = TestUtil.RandD(n * c, 17);
        int[] tok = [2, 0, 2, 4];
        double L() { var o = new double[n * c]; Embedding.Forward<double>(o, tok, wte, n, c); return Dot(o, r); }
        var d = new double[vocab * c];
        Embedding.Backward<double>(d, tok, r, n, c);
        TestUtil.Close(Fd(wte, L), d, Atol, Rtol, "dwte");
    }

    [Test]
    public void Linear_BackwardThroughGemm()
    {
        // y(N,out) = x(N,in)·Wᵀ; dx = dy·W; dW = dyᵀ·x — the three calls LlamaModel makes
        int n = 3, inF = 5, outF = 4;
        var x = TestUtil.RandD(n * inF, 18); var w = TestUtil.RandD(outF * inF, 19); var r = TestUtil.RandD(n * outF, 20);
        double L() { var y = new double[n * outF]; Gemm.Compute<double>(false, true, n, outF, inF, 1, x, inF, w, inF, 0, y, outF); return Dot(y, r); }
        var dx = new double[n * inF]; var dw = new double[outF * inF];
        Gemm.Compute<double>(false, false, n, inF, outF, 1, r, outF, w, inF, 0, dx, inF);
        Gemm.Compute<double>(true, false, outF, inF, n, 1, r, outF, x, inF, 0, dw, inF);
        TestUtil.Close(Fd(x, L), dx, Atol, Rtol, "dx");
        TestUtil.Close(Fd(w, L), dw, Atol, Rtol, "dW");
    }

    [Test]
    public void Lora_Backward_InFp64()
    {
        // the adapter class itself, run on the fp64 CPU backend: Δy = s·B(A·drop(x))
        var ops = new CpuBackend<double>();
        int n = 3, inF = 6, outF = 5;
        var cfg = new LoraConfig { Rank = 2, Alpha = 4, Dropout = 0.2f };
        using var lora = new LoraAdapter(ops, "m", inF, outF, cfg, seed: 1, id: 0);
        ops.Write(lora.B.W, TestUtil.RandD(outF * 2, 21));
        var ctx = new PassContext { Training = true, StepSeed = 5 };
        using var x = ops.Alloc("x", DType.F32, n, inF); using var y = ops.Alloc("y", DType.F32, n, outF);
        using var dy = ops.Alloc("dy", DType.F32, n, outF); using var dx = ops.Alloc("dx", DType.F32, n, inF);
        var xs = TestUtil.RandD(n * inF, 22); var r = TestUtil.RandD(n * outF, 23);
        var aw = ops.Read(lora.A.W); var bw = ops.Read(lora.B.W);
        double L()
        {
            ops.Write(x, xs); ops.Write(lora.A.W, aw); ops.Write(lora.B.W, bw); ops.Fill(y, 0);
            lora.Forward(ctx, x, y, n);
            return Dot(ops.Read(y), r);
        }
        L();
        ops.Write(dy, r);
        lora.Backward(ctx, x, dy, dx, n);
        TestUtil.Close(Fd(xs, L), ops.Read(dx), Atol, Rtol, "dx");
        TestUtil.Close(Fd(aw, L), ops.Read(lora.A.Grad!), Atol, Rtol, "dA");
        TestUtil.Close(Fd(bw, L), ops.Read(lora.B.Grad!), Atol, Rtol, "dB");
    }

    [Test]
    public void AdamW_MatchesTheClosedForm()
    {
        // two steps by hand: PyTorch's AdamW with decoupled decay and bias correction
        float p = 0.5f, m = 0, v = 0;
        float[] gs = [0.1f, -0.3f];
        Span<float> ps = [p]; Span<float> ms = [m]; Span<float> vs = [v];
        double pe = p, me = 0, ve = 0;
        for (int t = 1; t <= 2; t++)
        {
            AdamW.Step<float>(ps, [gs[t - 1]], ms, vs, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, t);
            pe -= 0.01 * 0.1 * pe;
            me = 0.9 * me + 0.1 * gs[t - 1]; ve = 0.999 * ve + 0.001 * gs[t - 1] * gs[t - 1];
            pe -= 0.01 * (me / (1 - Math.Pow(0.9, t))) / (Math.Sqrt(ve / (1 - Math.Pow(0.999, t))) + 1e-8);
        }
        Assert.That(ps[0], Is.EqualTo(pe).Within(1e-6));
    }

    [Test]
    public void WholeTinyModel_GradientsMatchFiniteDifferences_Fp64()
    {
        // every parameter kind (embedding, norms, projections, LM head, LoRA A and B) through the
        // full forward/backward of the model class, on the fp64 CPU backend
        var ops = new CpuBackend<double>();
        var cfg = LlamaConfig.Tiny with { Dim = 8, Heads = 2, FfnDim = 12, Vocab = 11, Layers = 2 };
        using var model = new LlamaModel(ops, cfg, DType.F32, trainBase: true, seed: 4);
        foreach (var a in model.AddLora(new LoraConfig { Rank = 2, Dropout = 0.1f, Targets = [Proj.q_proj, Proj.v_proj, Proj.up_proj] }, seed: 2))
            ops.Write(a.B.W, TestUtil.RandD((int)a.B.Length, 30, 0.5));
        var batch = ModelParityTests.TinyBatch(cfg, b: 2, t: 4);
        model.Pass.StepSeed = 3;
        var head = new CrossEntropyHead();
        model.Step(batch, head, backward: true);
        foreach (var p in model.TrainableParameters)
        {
            var w = ops.Read(p.W); var g = ops.Read(p.Grad!);
            // a few elements per tensor keep the test fast
            for (int i = 0; i < w.Length; i += Math.Max(1, w.Length / 5))
            {
                double o = w[i];
                w[i] = o + H; ops.Write(p.W, w); double lp = model.Step(batch, head, backward: false);
                w[i] = o - H; ops.Write(p.W, w); double lm = model.Step(batch, head, backward: false);
                w[i] = o; ops.Write(p.W, w);
                double fd = (lp - lm) / (2 * H);
                Assert.That(g[i], Is.EqualTo(fd).Within(1e-6 + 1e-5 * Math.Abs(fd)), $"{p.Name}[{i}]");
            }
        }
    }
}
