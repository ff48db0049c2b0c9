using NegDistill.Kernels;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>
/// The cuBLASLt binding without a GPU: the row-major → column-major mapping (<see cref="CuBlasLt.Map"/>)
/// fed to a reference that computes exactly what cublasLtMatmul documents (column-major D = alpha·op(A)·op(B)
/// + beta·C over the stored layouts and leading dimensions) reproduces the engine's row-major MatMul for
/// every transpose case; the library search says why when nothing is found; the dispatcher on ILGPU's CPU
/// accelerator runs version 1 and refuses the CUDA-only versions by name.
/// </summary>
[TestFixture]
public class CuBlasLtTests
{
    /// <summary>cuBLAS semantics: X stored column-major (rows × cols, ld): X(i, j) = x[i + j·ld]; op(X) = Xᵀ when
    /// trans. D(m', n') = alpha·Σ_k op(A)(i, k)·op(B)(k, j) + beta·C(i, j), C stored (m' × n', ldc).</summary>
    static void ColumnMajorGemm(CuBlasLt.LtCall call, float[] first, float[] second, float[] c, float alpha, float beta)
    {
        float A(ulong i, ulong k) => call.TransFirst ? first[(long)k + (long)i * call.FirstLd] : first[(long)i + (long)k * call.FirstLd];
        float B(ulong k, ulong j) => call.TransSecond ? second[(long)j + (long)k * call.SecondLd] : second[(long)k + (long)j * call.SecondLd];
        // op(first) must be M' × K, op(second) K × N' as stored
        Assert.That(call.TransFirst ? (call.FirstCols, call.FirstRows) : (call.FirstRows, call.FirstCols), Is.EqualTo((call.M, call.K)));
        Assert.That(call.TransSecond ? (call.SecondCols, call.SecondRows) : (call.SecondRows, call.SecondCols), Is.EqualTo((call.K, call.N)));
        Assert.That((call.CRows, call.CCols), Is.EqualTo((call.M, call.N)));
        for (ulong i = 0; i < call.M; i++)
            for (ulong j = 0; j < call.N; j++)
            {
                double s = 0;
                for (ulong k = 0; k < call.K; k++) s += (double)A(i, k) * B(k, j);
                long idx = (long)i + (long)j * call.Ldc;
                c[idx] = (float)(alpha * s + beta * c[idx]);
            }
    }

    [Test]
    public void RowMajorMapping_MatchesTheEnginesMatMul([Values] bool transA, [Values] bool transB, [Values(0f, 0.5f)] float beta)
    {
        const int m = 5, n = 7, k = 3;
        var a = TestUtil.Rand(m * k, 1); var b = TestUtil.Rand(n * k, 2); var c0 = TestUtil.Rand(m * n, 3);
        var d = new MatMulKernels.Dims { M = m, N = n, K = k, Lda = transA ? m : k, Ldb = transB ? k : n, Ldc = n, TransA = transA ? 1 : 0, TransB = transB ? 1 : 0, Alpha = 1.5f, Beta = beta };
        // the engine's twin on the same inputs
        var ops = new CpuBackend();
        using var ta = ops.Alloc("a", DType.F32, m * k); using var tb = ops.Alloc("b", DType.F32, n * k); using var tc = ops.Alloc("c", DType.F32, m * n);
        ops.Upload(ta, a); ops.Upload(tb, b); ops.Upload(tc, c0);
        ops.MatMul(tc, ta, tb, m, n, k, transA, transB, 1.5f, beta);
        var want = TestUtil.Get(ops, tc);
        // the cuBLASLt call: first operand = the engine's B, second = its A, C as is
        var got = (float[])c0.Clone();
        ColumnMajorGemm(CuBlasLt.Map(d), b, a, got, 1.5f, beta);
        Assert.That(got, Is.EqualTo(want).Within(1e-5f));
    }

    [Test]
    public void MissingLibrary_IsReportedWithWhereItLooked()
    {
        string? old = Environment.GetEnvironmentVariable("NEGDISTILL_CUBLASLT");
        try
        {
            Environment.SetEnvironmentVariable("NEGDISTILL_CUBLASLT", "/nonexistent/libcublasLt.so.13");
            var candidates = CuBlasLt.Candidates().ToList();
            Assert.That(candidates[0], Is.EqualTo("/nonexistent/libcublasLt.so.13"), "the variable comes first");
            Assert.That(candidates, Has.Some.Contains("nvidia/cublas/lib").Or.Some.StartsWith("libcublasLt.so"));
            // this machine has no CUDA install: nothing loads, and the reason names the places searched
            if (candidates.All(c => !System.Runtime.InteropServices.NativeLibrary.TryLoad(c, out _)))
            {
                Assert.That(CuBlasLt.TryCreate(IntPtr.Zero, _ => 0, out string why), Is.Null);
                Assert.That(why, Does.Contain("cuBLASLt not found").And.Contain("nvidia-cublas"));
            }
        }
        finally { Environment.SetEnvironmentVariable("NEGDISTILL_CUBLASLT", old); }
    }

    [Test]
    public void CpuAccelerator_RunsVersion1_AndRefusesTheCudaVersionsByName()
    {
        var ilgpu = (IlgpuBackend)TestUtil.Ilgpu;
        Assert.That(ilgpu.IsCuda, Is.False);
        Assert.That(ilgpu.HasTensorCoreKernel, Is.False, "inline PTX is skipped on the CPU accelerator: version 2 is never loaded there");
        Assert.That(ilgpu.MatMulPath, Does.StartWith("v1"));
        using var a = ilgpu.Alloc("a", DType.F32, 16, 16); using var w = ilgpu.Alloc("w", DType.BF16, 16, 16); using var c = ilgpu.Alloc("c", DType.F32, 16, 16);
        var old = ilgpu.MatMulVersion;
        try
        {
            foreach (var v in new[] { MatMulKernels.Version.V2Mma, MatMulKernels.Version.Library })
            {
                ilgpu.MatMulVersion = v;
                var ex = Assert.Throws<NotSupportedException>(() => ilgpu.MatMul(c, a, w, 16, 16, 16, false, true));
                Assert.That(ex!.Message, Does.Contain("CUDA").And.Contain(v.ToString()));
            }
            ilgpu.MatMulVersion = MatMulKernels.Version.Auto;
            Assert.DoesNotThrow(() => ilgpu.MatMul(c, a, w, 16, 16, 16, false, true));
        }
        finally { ilgpu.MatMulVersion = old; }
    }
}
