using System.Runtime.InteropServices;

namespace NegDistill.Kernels;

/// <summary>
/// The one library NegDistill's CUDA path uses for matmuls, as llm.c does: cuBLASLt, bound here by
/// P/Invoke through function pointers resolved at run time (ILGPU.Algorithms' CuBlas wraps only
/// Sgemm/Dgemm/Hgemm, and a mixed BF16-in/F32-out GEMM needs cublasLtMatmul). It runs on ILGPU's CUDA
/// stream and buffers (device addresses); when the library is missing the engine says why and keeps
/// its own kernels (MatMulKernels v2/v1).
///
/// Row-major to column-major: cuBLAS sees a row-major X (r×c, leading dimension ld) as the column-major
/// Xᵀ (c×r, ld). So the engine's C(M,N) = op(A)·op(B) is computed as the column-major Cᵀ(N,M) =
/// op(B)ᵀ·op(A)ᵀ: cuBLAS's first operand is the engine's B, its second the engine's A, each with the
/// transpose flag it already has (<see cref="Map"/>; tested against a column-major reference in
/// CuBlasLtTests).
/// Never run on a GPU in this repository's sessions so far: gpu-check verifies and times it when one is lent.
/// </summary>
public sealed unsafe class CuBlasLt : IDisposable
{
    // cublas_api.h / cublasLt.h / library_types.h values
    const int CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14;
    const int CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77;
    const int DESC_TRANSA = 3, DESC_TRANSB = 4, PREF_MAX_WORKSPACE_BYTES = 1;
    const int HeuristicResultBytes = 96;   // cublasLtMatmulAlgo_t (64) + size_t + status + float + int[4]
    public const long WorkspaceBytes = 32L << 20;

    /// <summary>The column-major call that computes the engine's row-major product (see the class summary).
    /// First operand: the engine's B stored (rows × cols, ld) with transpose flag; second: A; C/D: N × M, ldc.</summary>
    public readonly record struct LtCall(ulong M, ulong N, ulong K,
        bool TransFirst, ulong FirstRows, ulong FirstCols, long FirstLd,
        bool TransSecond, ulong SecondRows, ulong SecondCols, long SecondLd,
        ulong CRows, ulong CCols, long Ldc);

    public static LtCall Map(MatMulKernels.Dims d)
    {
        // column-major problem: m' = N, n' = M, k' = K; first operand op(B)ᵀ (N×K), second op(A)ᵀ (K×M)
        // engine B !transB: stored (K,N) row-major = column-major (N×K), ld = Ldb, used as is (N)
        //          transB: stored (N,K) row-major = column-major (K×N), ld = Ldb, transposed (T)
        // engine A !transA: stored (M,K) = column-major (K×M), ld = Lda, N;   transA: (K,M) = (M×K), T
        bool tb = d.TransB != 0, ta = d.TransA != 0;
        return new LtCall((ulong)d.N, (ulong)d.M, (ulong)d.K,
            tb, tb ? (ulong)d.K : (ulong)d.N, tb ? (ulong)d.N : (ulong)d.K, d.Ldb,
            ta, ta ? (ulong)d.M : (ulong)d.K, ta ? (ulong)d.K : (ulong)d.M, d.Lda,
            (ulong)d.N, (ulong)d.M, d.Ldc);
    }

    readonly IntPtr _lib;
    readonly IntPtr _handle;
    readonly IntPtr _stream;
    readonly ulong _workspace;
    readonly Dictionary<(LtCall, int, int), Plan> _plans = new();

    delegate* unmanaged<IntPtr*, int> _create;
    delegate* unmanaged<IntPtr, int> _destroy;
    delegate* unmanaged<IntPtr*, int, int, int> _descCreate;
    delegate* unmanaged<IntPtr, int> _descDestroy;
    delegate* unmanaged<IntPtr, int, void*, nuint, int> _descSet;
    delegate* unmanaged<IntPtr*, int, ulong, ulong, long, int> _layoutCreate;
    delegate* unmanaged<IntPtr, int> _layoutDestroy;
    delegate* unmanaged<IntPtr*, int> _prefCreate;
    delegate* unmanaged<IntPtr, int> _prefDestroy;
    delegate* unmanaged<IntPtr, int, void*, nuint, int> _prefSet;
    delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, int, void*, int*, int> _heuristic;
    delegate* unmanaged<IntPtr, IntPtr, void*, ulong, IntPtr, ulong, IntPtr, void*, ulong, IntPtr, ulong, IntPtr, void*, ulong, nuint, IntPtr, int> _matmul;
    delegate* unmanaged<nuint> _version;

    sealed class Plan
    {
        public IntPtr Desc, First, Second, C;
        public readonly byte[] Algo = new byte[64];
    }

    /// <summary>Where the library was loaded from, and its version.</summary>
    public string Description { get; }

    /// <summary>The file names and folders searched, in order: $NEGDISTILL_CUBLASLT (a file), the loader's own
    /// path (LD_LIBRARY_PATH, ldconfig), $CUDA_PATH / $CUDA_HOME / /usr/local/cuda, and Python's nvidia-cublas
    /// wheels (nvidia/cublas/lib, nvidia/cu13/lib) under the usual site-packages folders.</summary>
    public static IEnumerable<string> Candidates()
    {
        var env = Environment.GetEnvironmentVariable("NEGDISTILL_CUBLASLT");
        if (!string.IsNullOrEmpty(env)) yield return env;
        string[] names = ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"];
        foreach (var n in names) yield return n;
        var roots = new List<string>();
        foreach (var v in new[] { "CUDA_PATH", "CUDA_HOME" })
            if (Environment.GetEnvironmentVariable(v) is { Length: > 0 } p) roots.Add(p);
        roots.AddRange(["/usr/local/cuda", "/usr/local/cuda-13.0", "/usr/local/cuda-13", "/usr/local/cuda-12"]);
        foreach (var r in roots)
            foreach (var sub in new[] { "lib64", "lib", "targets/x86_64-linux/lib" })
                foreach (var n in names) yield return Path.Combine(r, sub, n);
        foreach (var site in SitePackages())
            foreach (var pkg in new[] { "nvidia/cublas/lib", "nvidia/cu13/lib", "nvidia/cu12/lib" })
                foreach (var n in names) yield return Path.Combine(site, pkg, n);
    }

    static IEnumerable<string> SitePackages()
    {
        var bases = new List<string> { "/usr/lib", "/usr/local/lib", "/opt/conda/lib", "/usr/lib64" };
        var home = Environment.GetEnvironmentVariable("HOME");
        if (!string.IsNullOrEmpty(home)) bases.Add(Path.Combine(home, ".local", "lib"));
        if (Environment.GetEnvironmentVariable("VIRTUAL_ENV") is { Length: > 0 } venv) bases.Add(Path.Combine(venv, "lib"));
        foreach (var b in bases)
        {
            if (!Directory.Exists(b)) continue;
            foreach (var py in Directory.EnumerateDirectories(b, "python3*"))
                foreach (var kind in new[] { "site-packages", "dist-packages" })
                    if (Directory.Exists(Path.Combine(py, kind))) yield return Path.Combine(py, kind);
        }
        if (Directory.Exists("/usr/lib/python3/dist-packages")) yield return "/usr/lib/python3/dist-packages";
    }

    /// <summary>Loads the library and creates a handle bound to <paramref name="stream"/>; null, with the
    /// reason, when the library or one of its functions is missing or the handle cannot be created.</summary>
    public static CuBlasLt? TryCreate(IntPtr stream, Func<long, ulong> allocateWorkspace, out string why)
    {
        IntPtr lib = IntPtr.Zero; string? path = null;
        foreach (var c in Candidates())
            if ((c.Contains('/') ? File.Exists(c) : true) && NativeLibrary.TryLoad(c, out lib)) { path = c; break; }
        if (path == null) { why = "cuBLASLt not found (tried $NEGDISTILL_CUBLASLT, the loader path, CUDA_PATH/CUDA_HOME, /usr/local/cuda, Python's nvidia-cublas packages)"; return null; }
        try
        {
            var lt = new CuBlasLt(lib, path, stream, allocateWorkspace);
            why = "";
            return lt;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or InvalidOperationException)
        {
            why = $"cuBLASLt at {path} unusable: {e.Message}";
            return null;
        }
    }

    CuBlasLt(IntPtr lib, string path, IntPtr stream, Func<long, ulong> allocateWorkspace)
    {
        _lib = lib; _stream = stream;
        IntPtr F(string name) => NativeLibrary.GetExport(lib, name);
        _create = (delegate* unmanaged<IntPtr*, int>)F("cublasLtCreate");
        _destroy = (delegate* unmanaged<IntPtr, int>)F("cublasLtDestroy");
        _descCreate = (delegate* unmanaged<IntPtr*, int, int, int>)F("cublasLtMatmulDescCreate");
        _descDestroy = (delegate* unmanaged<IntPtr, int>)F("cublasLtMatmulDescDestroy");
        _descSet = (delegate* unmanaged<IntPtr, int, void*, nuint, int>)F("cublasLtMatmulDescSetAttribute");
        _layoutCreate = (delegate* unmanaged<IntPtr*, int, ulong, ulong, long, int>)F("cublasLtMatrixLayoutCreate");
        _layoutDestroy = (delegate* unmanaged<IntPtr, int>)F("cublasLtMatrixLayoutDestroy");
        _prefCreate = (delegate* unmanaged<IntPtr*, int>)F("cublasLtMatmulPreferenceCreate");
        _prefDestroy = (delegate* unmanaged<IntPtr, int>)F("cublasLtMatmulPreferenceDestroy");
        _prefSet = (delegate* unmanaged<IntPtr, int, void*, nuint, int>)F("cublasLtMatmulPreferenceSetAttribute");
        _heuristic = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, int, void*, int*, int>)F("cublasLtMatmulAlgoGetHeuristic");
        _matmul = (delegate* unmanaged<IntPtr, IntPtr, void*, ulong, IntPtr, ulong, IntPtr, void*, ulong, IntPtr, ulong, IntPtr, void*, ulong, nuint, IntPtr, int>)F("cublasLtMatmul");
        _version = (delegate* unmanaged<nuint>)F("cublasLtGetVersion");
        IntPtr h;
        Check(_create(&h), "cublasLtCreate");
        _handle = h;
        _workspace = allocateWorkspace(WorkspaceBytes);
        Description = $"cuBLASLt {_version()} ({path})";
    }

    static void Check(int status, string call)
    {
        if (status != 0) throw new InvalidOperationException($"{call} returned cuBLAS status {status}{status switch { 1 => " (NOT_INITIALIZED)", 3 => " (ALLOC_FAILED)", 7 => " (INVALID_VALUE)", 8 => " (ARCH_MISMATCH)", 13 => " (EXECUTION_FAILED)", 14 => " (INTERNAL_ERROR)", 15 => " (NOT_SUPPORTED)", _ => "" }}");
    }

    /// <summary>C(M,N) = alpha·op(A)·op(B) + beta·C, row-major as the engine's MatMul, with C F32 and A, B both
    /// BF16, both F16 (F32 accumulation), or both F32 (TF32 tensor cores, F32 accumulation). Device
    /// addresses; enqueued on ILGPU's stream.</summary>
    public void Gemm(ulong c, ulong a, ulong b, Runtime.DType abType, MatMulKernels.Dims d)
    {
        int type = abType switch { Runtime.DType.BF16 => CUDA_R_16BF, Runtime.DType.F16 => CUDA_R_16F, Runtime.DType.F32 => CUDA_R_32F, _ => throw new ArgumentException($"cuBLASLt GEMM of {abType} operands") };
        var call = Map(d);
        var p = PlanFor(call, type);
        float alpha = d.Alpha, beta = d.Beta;
        fixed (byte* algo = p.Algo)
            Check(_matmul(_handle, p.Desc, &alpha, b, p.First, a, p.Second, &beta, c, p.C, c, p.C, algo, _workspace, (nuint)WorkspaceBytes, _stream), "cublasLtMatmul");
    }

    Plan PlanFor(LtCall call, int type)
    {
        int compute = type == CUDA_R_32F ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
        if (_plans.TryGetValue((call, type, compute), out var plan)) return plan;
        plan = new Plan();
        IntPtr desc, first, second, cl, pref;
        Check(_descCreate(&desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
        plan.Desc = desc;
        int ta = call.TransFirst ? 1 : 0, tb = call.TransSecond ? 1 : 0;
        Check(_descSet(desc, DESC_TRANSA, &ta, sizeof(int)), "cublasLtMatmulDescSetAttribute(TRANSA)");
        Check(_descSet(desc, DESC_TRANSB, &tb, sizeof(int)), "cublasLtMatmulDescSetAttribute(TRANSB)");
        Check(_layoutCreate(&first, type, call.FirstRows, call.FirstCols, call.FirstLd), "cublasLtMatrixLayoutCreate(A)");
        Check(_layoutCreate(&second, type, call.SecondRows, call.SecondCols, call.SecondLd), "cublasLtMatrixLayoutCreate(B)");
        Check(_layoutCreate(&cl, CUDA_R_32F, call.CRows, call.CCols, call.Ldc), "cublasLtMatrixLayoutCreate(C)");
        (plan.First, plan.Second, plan.C) = (first, second, cl);
        Check(_prefCreate(&pref), "cublasLtMatmulPreferenceCreate");
        try
        {
            ulong ws = (ulong)WorkspaceBytes;
            Check(_prefSet(pref, PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ulong)), "cublasLtMatmulPreferenceSetAttribute");
            var results = stackalloc byte[HeuristicResultBytes];
            int found = 0;
            Check(_heuristic(_handle, desc, first, second, cl, cl, pref, 1, results, &found), "cublasLtMatmulAlgoGetHeuristic");
            if (found == 0) throw new InvalidOperationException($"cuBLASLt has no algorithm for {call}");
            new ReadOnlySpan<byte>(results, 64).CopyTo(plan.Algo);
        }
        finally { _prefDestroy(pref); }
        _plans[(call, type, compute)] = plan;
        return plan;
    }

    public void Dispose()
    {
        foreach (var p in _plans.Values)
        {
            _layoutDestroy(p.First); _layoutDestroy(p.Second); _layoutDestroy(p.C); _descDestroy(p.Desc);
        }
        _plans.Clear();
        if (_handle != IntPtr.Zero) _destroy(_handle);
    }
}
