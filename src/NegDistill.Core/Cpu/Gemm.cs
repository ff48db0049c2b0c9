// ─────────────────────────────────────────────────────────────────────────────
// CPU GEMM:  C(M,N) = alpha · op(A)(M,K) · op(B)(K,N) + beta · C, all row-major.
//
// Packed path (everything but skinny shapes), Goto/BLIS blocking so that each level of
// the memory hierarchy feeds the next one without going back to DRAM:
//   for jc in N step NC                  B panel op(B)[pc:pc+kc, jc:jc+nc] packed once per (jc, pc)
//     for pc in K step KC                  into NR-wide column slivers [nc/NR][kc][NR]   (shared, L3)
//       parallel over work items (ic row block × column chunk):
//         pack op(A)[ic:ic+mc, pc:pc+kc] into MR-tall row slivers [mc/MR][kc][MR]    (per thread, L2)
//         for jr in chunk step NR          one B sliver (kc×NR) stays in L1 ...
//           for ir in mc step MR           ... while the A slivers stream from L2 through
//             micro-kernel: an MR×NR tile of C in registers (MR·NR/W accumulators);
//             per k: NR/W vector loads of B, MR broadcasts of A, MR·NR/W FMAs.
// Packing makes every micro-kernel read contiguous memory and reduces the four transpose
// combinations to one inner loop: the transposes only change the packing loops (plain
// copies, or W×W in-register transposes: 16×16 floats with AVX-512, 8×8 with AVX).
// Tiles: with AVX-512 12×32 floats / 12×16 doubles (24 zmm accumulators of 32 registers);
// with 256/128-bit vectors 6×2W (12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16
// registers; a 4×3W tile, 12 + 3 + 1 = 16, was measured no faster, see benchmarks/RESULTS.md).
//
// Blocking (GemmBlocking.Derive), from the running CPU's caches (CpuInfo.Caches: sysfs, else
// CPUID, else defaults), read once at start-up, as in Low et al., "Analytical modeling is
// enough for high-performance BLIS" (TOMS 2016):
//   KC: one A sliver (MR×KC) and the B sliver (KC×NR) share all but one way of L1d:
//       KC = L1d·(ways−1)/ways / ((MR+NR)·4 bytes), a multiple of 8 in [64, 512]
//       (Zen 5, 48 KiB 12-way, AVX-512: 256; Zen 3, 32 KiB 8-way, AVX2: 320);
//   MC: the packed A block (MC×KC) takes at most half of L2, and at most 144 rows (the
//       fastest measured on Zen 5; more rows also mean fewer work items to share out);
//   NC: the shared B panel (KC×NC) takes at most half of L3 (L2 if there is none), ≤ 4096.
// The same KC serves float and double (NR halves for double, so the B sliver keeps its size).
//
// Skinny shapes skip packing the big operand, which would cost as much as the multiply:
//   few rows, op(B) rows contiguous  → StreamB: the same micro-kernels read B in place;
//   few rows, op(B) cols contiguous  → DotRows: 4×4 blocks of vector dot products (two 2×4
//                                       passes with 16 registers, so nothing spills);
//   few columns                      → the same two on Cᵀ = op(B)ᵀ·op(A)ᵀ, stored transposed.
//
// Determinism: the path depends on the shape and transposes only. Within a path each C
// element is computed by one thread as a fixed sequence (packed/StreamB: per K block, an
// FMA chain in k order, then c ← alpha·acc + beta'·c; DotRows: fixed vector lanes and a
// fixed reduction), and lanes never mix across elements, so the bits do not depend on the
// thread count, the work split or the scheduling. They may differ between machines: KC
// (hence the K split) follows the L1d cache, the dot-product lanes follow the vector width,
// and without hardware FMA (e.g. DOTNET_EnableAVX2=0) every FMA is a multiply and an add.
// MC, NC and the tile shape never change a bit.
// ─────────────────────────────────────────────────────────────────────────────
using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace NegDistill.Cpu;

/// <summary>
/// Blocking of the packed GEMM path on one machine, in elements (see the header of Gemm.cs):
/// the micro-kernel tile (MR×NR floats), KC (the K block), MC (rows of a packed A block) and NC
/// (columns of a packed B panel), and the caches they were derived from.
/// </summary>
public sealed record GemmBlocking(string Kernel, int Mr, int Nr, int Kc, int Mc, int Nc, CacheInfo Caches)
{
    /// <summary>The blocking for a vector width of <paramref name="vectorBytes"/> (64, 32 or 16) and these caches.</summary>
    public static GemmBlocking Derive(CacheInfo caches, int vectorBytes)
    {
        int lanes = Math.Max(4, vectorBytes / 4);
        int mr = lanes == 16 ? 12 : 6, nr = 2 * lanes;
        string kernel = lanes switch { 16 => "AVX-512", 8 => "256-bit", _ => "128-bit" } + $" {mr}×{nr}";
        int ways = Math.Max(2, caches.L1dWays);
        long l1 = caches.L1d > 0 ? caches.L1d : 32 << 10;
        int kc = (int)Math.Clamp(l1 * (ways - 1) / ways / ((mr + nr) * sizeof(float)) / 8 * 8, 64, 512);
        long l2 = caches.L2 > 0 ? caches.L2 : 8 * l1;
        int mc = (int)Math.Clamp(l2 / 2 / ((long)kc * sizeof(float)) / mr * mr, mr, 144 / mr * mr);
        long llc = caches.L3 > 0 ? caches.L3 : l2;
        int nc = (int)Math.Clamp(llc / 2 / ((long)kc * sizeof(float)) / nr * nr, 16 * nr, 4096 / nr * nr);
        return new GemmBlocking(kernel, mr, nr, kc, mc, nc, caches);
    }

    public override string ToString() => $"{Kernel} float tile, KC {Kc}, MC {Mc}, NC {Nc} from {Caches}";
}

/// <summary>Deterministic, multi-threaded, SIMD matrix multiplication on the CPU.</summary>
public static unsafe class Gemm
{
    /// <summary>
    /// Upper bound on the threads one call may use; 0 or less means <see cref="Environment.ProcessorCount"/>.
    /// Results are bit-identical for every value (see the header comment).
    /// </summary>
    public static int MaxDegreeOfParallelism { get; set; }

    /// <summary>
    /// The packed path's blocking on this machine, derived once from <see cref="CpuInfo.Caches"/> and the active
    /// vector width. KC sets the K split, so it (not the determinism) decides the last bits of a result.
    /// </summary>
    public static GemmBlocking Blocking { get; } = GemmBlocking.Derive(CpuInfo.Caches, CpuInfo.VectorBytes);

    /// <summary>The vector width of the micro-kernels in use, "512-bit", "256-bit" or "128-bit", as <see cref="Compute{T}"/> dispatches.</summary>
    public static string Path => Vector512.IsHardwareAccelerated ? "512-bit" : Vector256.IsHardwareAccelerated ? "256-bit" : "128-bit";

    // In elements, the same for float and double (NR halves for double, so the B sliver keeps its size).
    private static readonly int Kc = Blocking.Kc;
    private static readonly int Mc = Blocking.Mc;
    private static readonly int Nc = Blocking.Nc;

    /// <summary>a·b + c: one rounding where FMA is an instruction, a multiply and an add where it would be a slow software routine.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Mad<T>(T a, T b, T c) where T : IFloatingPointIeee754<T>
        => Fma.IsSupported || AdvSimd.IsSupported ? T.FusedMultiplyAdd(a, b, c) : a * b + c;

    /// <summary>Below this many multiply-adds a call runs on the calling thread only.</summary>
    private const long ParallelThreshold = 1L << 21;

    /// <summary>The same for the few-rows dot-product path (a decode step's x·Wᵀ): 16×288×288 ran 1.4× faster on two
    /// threads than on one (benchmarks/RESULTS.md). Not lowered for the other paths, whose small products run inside
    /// the attention's parallel loop over (batch, head) pairs.</summary>
    private const long DotRowsParallelThreshold = 1L << 19;

    private static int Threads => MaxDegreeOfParallelism > 0 ? MaxDegreeOfParallelism : Environment.ProcessorCount;

    // ───────────────────────────── public API ─────────────────────────────

    /// <summary>
    /// C(M,N) = alpha · op(A)(M,K) · op(B)(K,N) + beta · C. Row-major everywhere.
    /// op(A) = A (M×K, row stride lda) or, when <paramref name="transA"/>, Aᵀ with A stored K×M (row stride lda);
    /// likewise op(B) = B (K×N) or Bᵀ with B stored N×K. beta == 0 overwrites C (old contents, even NaN, ignored).
    /// C must not overlap A or B. Fast paths for float and double; any other IEEE type runs the scalar reference loop.
    /// The result is bit-identical for every thread count (<see cref="MaxDegreeOfParallelism"/>) and run.
    /// </summary>
    public static void Compute<T>(bool transA, bool transB, int M, int N, int K, T alpha,
        ReadOnlySpan<T> A /* op(A): M×K */, int lda, ReadOnlySpan<T> B /* op(B): K×N */, int ldb,
        T beta, Span<T> C /* M×N */, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Validate(transA, transB, M, N, K, A.Length, lda, B.Length, ldb, C.Length, ldc);
        if (M == 0 || N == 0) return;
        if (typeof(T) != typeof(float) && typeof(T) != typeof(double))
        {
            Reference(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
            return;
        }
        fixed (T* pa = A) fixed (T* pb = B) fixed (T* pc = C)
        {
            if (K == 0) { ScaleC(M, N, beta, pc, ldc); return; }
            if (Vector512.IsHardwareAccelerated)
                DispatchDirect<T, Vector512<T>, S512<T>>(transA, transB, M, N, K, alpha, pa, lda, pb, ldb, beta, pc, ldc);
            else if (Vector256.IsHardwareAccelerated)
                DispatchDirect<T, Vector256<T>, S256<T>>(transA, transB, M, N, K, alpha, pa, lda, pb, ldb, beta, pc, ldc);
            else
                DispatchDirect<T, Vector128<T>, S128<T>>(transA, transB, M, N, K, alpha, pa, lda, pb, ldb, beta, pc, ldc);
        }
    }

    /// <summary>
    /// Like <see cref="Compute{T}"/> for float, with B given as raw 16-bit words widened to float on the fly:
    /// IEEE binary16 when <paramref name="bf16"/> is false, bfloat16 (the upper 16 bits of a float) when true.
    /// The result is bit-identical to widening B to float first and calling <see cref="Compute{T}"/>.
    /// </summary>
    public static void ComputeWide16(bool transA, bool transB, int M, int N, int K, float alpha,
        ReadOnlySpan<float> A /* op(A): M×K */, int lda, ReadOnlySpan<ushort> B /* op(B): K×N, 16-bit */, int ldb, bool bf16,
        float beta, Span<float> C /* M×N */, int ldc)
    {
        Validate(transA, transB, M, N, K, A.Length, lda, B.Length, ldb, C.Length, ldc);
        if (M == 0 || N == 0) return;
        fixed (float* pa = A) fixed (ushort* pb = B) fixed (float* pc = C)
        {
            if (K == 0) { ScaleC(M, N, beta, pc, ldc); return; }
            if (Vector512.IsHardwareAccelerated)
                DispatchWide16<Vector512<float>, S512<float>>(transA, transB, M, N, K, alpha, pa, lda, pb, ldb, bf16, beta, pc, ldc);
            else if (Vector256.IsHardwareAccelerated)
                DispatchWide16<Vector256<float>, S256<float>>(transA, transB, M, N, K, alpha, pa, lda, pb, ldb, bf16, beta, pc, ldc);
            else
                DispatchWide16<Vector128<float>, S128<float>>(transA, transB, M, N, K, alpha, pa, lda, pb, ldb, bf16, beta, pc, ldc);
        }
    }

    /// <summary>Naive triple loop with the semantics of <see cref="Compute{T}"/>: the test oracle and benchmark baseline.</summary>
    public static void Reference<T>(bool transA, bool transB, int M, int N, int K, T alpha,
        ReadOnlySpan<T> A /* op(A): M×K */, int lda, ReadOnlySpan<T> B /* op(B): K×N */, int ldb,
        T beta, Span<T> C /* M×N */, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Validate(transA, transB, M, N, K, A.Length, lda, B.Length, ldb, C.Length, ldc);
        for (int i = 0; i < M; i++)
        {
            for (int j = 0; j < N; j++)
            {
                T sum = T.Zero;
                for (int k = 0; k < K; k++)
                {
                    T a = transA ? A[k * lda + i] : A[i * lda + k];
                    T b = transB ? B[j * ldb + k] : B[k * ldb + j];
                    sum += a * b;
                }
                ref T c = ref C[i * ldc + j];
                c = beta == T.Zero ? alpha * sum : alpha * sum + beta * c;
            }
        }
    }

    // ───────────────────────────── validation ─────────────────────────────

    private static void Validate(bool transA, bool transB, int M, int N, int K,
        int aLen, int lda, int bLen, int ldb, int cLen, int ldc)
    {
        if (M < 0) throw new ArgumentOutOfRangeException(nameof(M), M, "must be non-negative");
        if (N < 0) throw new ArgumentOutOfRangeException(nameof(N), N, "must be non-negative");
        if (K < 0) throw new ArgumentOutOfRangeException(nameof(K), K, "must be non-negative");
        if (M == 0 || N == 0) return;
        CheckOperand("C", M, N, cLen, ldc);
        if (K == 0) return;
        CheckOperand("A", transA ? K : M, transA ? M : K, aLen, lda);
        CheckOperand("B", transB ? N : K, transB ? K : N, bLen, ldb);
    }

    private static void CheckOperand(string name, int rows, int cols, int length, int ld)
    {
        if (ld < cols)
            throw new ArgumentOutOfRangeException("ld" + char.ToLowerInvariant(name[0]), ld,
                $"leading dimension of {name} ({rows}×{cols} stored) must be at least {cols}");
        long need = (long)(rows - 1) * ld + cols;
        if (need > length)
            throw new ArgumentException($"{name} ({rows}×{cols} stored, ld {ld}) needs {need} elements but has {length}", name);
    }

    /// <summary>C ← beta·C (beta == 0: C ← 0), the K == 0 case.</summary>
    private static void ScaleC<T>(int M, int N, T beta, T* c /* M×N, stride ldc */, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < M; i++)
        {
            var row = new Span<T>(c + (nint)i * ldc, N);
            if (beta == T.Zero) row.Clear();
            else for (int j = 0; j < row.Length; j++) row[j] = beta * row[j];
        }
    }

    // ───────────────────────────── SIMD abstraction ─────────────────────────────

    /// <summary>Vector operations of one width; the kernels are written once against this and specialised by the JIT.</summary>
    private interface ISimd<T, TV> where T : unmanaged where TV : unmanaged
    {
        /// <summary>Lanes per vector (W).</summary>
        static abstract int Count { get; }
        /// <summary>Rows of the micro-kernel tile for this width (bounded by the register file).</summary>
        static abstract int Mr { get; }
        static abstract TV Zero { get; }
        static abstract TV Load(T* p);
        static abstract void Store(T* p, TV v);
        static abstract TV Splat(T x);
        /// <summary>a·b + c with a single rounding.</summary>
        static abstract TV Fma(TV a, TV b, TV c);
        static abstract TV Mul(TV a, TV b);
        static abstract T Sum(TV v);
        /// <summary>dst[0..4) = the lane sums of a, b, c, d, in one fixed order (halves folded, then pairwise adds).</summary>
        static abstract void Sum4(TV a, TV b, TV c, TV d, T* dst);
    }

    private readonly struct S512<T> : ISimd<T, Vector512<T>> where T : unmanaged
    {
        public static int Count => Vector512<T>.Count;
        public static int Mr => 12;
        public static Vector512<T> Zero => Vector512<T>.Zero;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<T> Load(T* p) => Vector512.Load(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(T* p, Vector512<T> v) => v.Store(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<T> Splat(T x) => Vector512.Create(x);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<T> Mul(Vector512<T> a, Vector512<T> b) => a * b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static T Sum(Vector512<T> v) => Vector512.Sum(v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Sum4(Vector512<T> a, Vector512<T> b, Vector512<T> c, Vector512<T> d, T* dst)
            => S256<T>.Sum4(a.GetLower() + a.GetUpper(), b.GetLower() + b.GetUpper(), c.GetLower() + c.GetUpper(), d.GetLower() + d.GetUpper(), dst);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<T> Fma(Vector512<T> a, Vector512<T> b, Vector512<T> c)
        {
            if (typeof(T) == typeof(float)) return Vector512.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
            if (typeof(T) == typeof(double)) return Vector512.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
            throw new NotSupportedException();
        }
    }

    private readonly struct S256<T> : ISimd<T, Vector256<T>> where T : unmanaged
    {
        public static int Count => Vector256<T>.Count;
        public static int Mr => 6;
        public static Vector256<T> Zero => Vector256<T>.Zero;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<T> Load(T* p) => Vector256.Load(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(T* p, Vector256<T> v) => v.Store(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<T> Splat(T x) => Vector256.Create(x);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<T> Mul(Vector256<T> a, Vector256<T> b) => a * b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static T Sum(Vector256<T> v) => Vector256.Sum(v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Sum4(Vector256<T> a, Vector256<T> b, Vector256<T> c, Vector256<T> d, T* dst)
            => S128<T>.Sum4(a.GetLower() + a.GetUpper(), b.GetLower() + b.GetUpper(), c.GetLower() + c.GetUpper(), d.GetLower() + d.GetUpper(), dst);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<T> Fma(Vector256<T> a, Vector256<T> b, Vector256<T> c)
        {
            // Without FMA hardware (DOTNET_EnableAVX2=0 on x86) the library's FusedMultiplyAdd is a software routine, ~100× slower.
            if (!System.Runtime.Intrinsics.X86.Fma.IsSupported && !AdvSimd.IsSupported) return a * b + c;
            if (typeof(T) == typeof(float)) return Vector256.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
            if (typeof(T) == typeof(double)) return Vector256.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
            throw new NotSupportedException();
        }
    }

    private readonly struct S128<T> : ISimd<T, Vector128<T>> where T : unmanaged
    {
        public static int Count => Vector128<T>.Count;
        public static int Mr => 6;
        public static Vector128<T> Zero => Vector128<T>.Zero;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<T> Load(T* p) => Vector128.Load(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(T* p, Vector128<T> v) => v.Store(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<T> Splat(T x) => Vector128.Create(x);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<T> Mul(Vector128<T> a, Vector128<T> b) => a * b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static T Sum(Vector128<T> v) => Vector128.Sum(v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Sum4(Vector128<T> a, Vector128<T> b, Vector128<T> c, Vector128<T> d, T* dst)
        {
            if (typeof(T) == typeof(float))
            {
                Vector128<float> fa = a.AsSingle(), fb = b.AsSingle(), fc = c.AsSingle(), fd = d.AsSingle();
                float* f = (float*)dst;
                if (Sse3.IsSupported)
                {
                    // hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3]; twice gives [(a0+a1)+(a2+a3), …, (d0+d1)+(d2+d3)]
                    Sse3.HorizontalAdd(Sse3.HorizontalAdd(fa, fb), Sse3.HorizontalAdd(fc, fd)).Store(f);
                    return;
                }
                f[0] = (fa[0] + fa[1]) + (fa[2] + fa[3]); f[1] = (fb[0] + fb[1]) + (fb[2] + fb[3]);
                f[2] = (fc[0] + fc[1]) + (fc[2] + fc[3]); f[3] = (fd[0] + fd[1]) + (fd[2] + fd[3]);
                return;
            }
            if (typeof(T) == typeof(double))
            {
                Vector128<double> da = a.AsDouble(), db = b.AsDouble(), dc = c.AsDouble(), dd = d.AsDouble();
                double* g = (double*)dst;
                g[0] = da[0] + da[1]; g[1] = db[0] + db[1]; g[2] = dc[0] + dc[1]; g[3] = dd[0] + dd[1];
                return;
            }
            throw new NotSupportedException();
        }
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<T> Fma(Vector128<T> a, Vector128<T> b, Vector128<T> c)
        {
            // Without FMA hardware (DOTNET_EnableAVX2=0 on x86) the library's FusedMultiplyAdd is a software routine, ~100× slower.
            if (!System.Runtime.Intrinsics.X86.Fma.IsSupported && !AdvSimd.IsSupported) return a * b + c;
            if (typeof(T) == typeof(float)) return Vector128.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
            if (typeof(T) == typeof(double)) return Vector128.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
            throw new NotSupportedException();
        }
    }

    // ───────────────────────────── packing ─────────────────────────────

    /// <summary>Source of op(B) for the packed path: packs a kc×(j1−j0) block into NR-wide slivers.</summary>
    private interface IPackB<T> where T : unmanaged
    {
        /// <summary>
        /// dst[((j−j0)/nr)·kc·nr + k·nr + (j−j0)%nr] = op(B)[p0+k, j] for k &lt; kc, j0 ≤ j &lt; j1;
        /// columns of the last sliver past j1 are zero.
        /// </summary>
        void Pack(int p0, int kc, int j0, int j1, int nr, T* dst);
    }

    /// <summary>op(B) from a T matrix: B (K×N, stride ldb) or, when trans, Bᵀ with B stored N×K.</summary>
    private readonly struct PackDirect<T> : IPackB<T> where T : unmanaged
    {
        private readonly T* _b;
        private readonly int _ldb;
        private readonly bool _trans;

        public PackDirect(T* b, int ldb, bool trans) { _b = b; _ldb = ldb; _trans = trans; }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Pack(int p0, int kc, int j0, int j1, int nr, T* dst)
        {
            for (int j = j0; j < j1; j += nr, dst += (nint)kc * nr)
            {
                int w = Math.Min(nr, j1 - j);
                if (!_trans)
                {
                    // B stored K×N: each k-row of the sliver is a contiguous run of B.
                    T* src = _b + (nint)p0 * _ldb + j;
                    if (w == nr)
                        CopyRows((byte*)src, (nint)_ldb * sizeof(T), (byte*)dst, nr * sizeof(T), kc);
                    else
                    {
                        for (int k = 0; k < kc; k++, src += _ldb)
                        {
                            T* d = dst + (nint)k * nr;
                            new ReadOnlySpan<T>(src, w).CopyTo(new Span<T>(d, w));
                            new Span<T>(d + w, nr - w).Clear();
                        }
                    }
                }
                else
                {
                    // B stored N×K: column j of op(B) is row j of B, contiguous over k.
                    PackTransposed(_b + (nint)j * _ldb + p0, _ldb, w, kc, dst, nr);
                }
            }
        }
    }

    /// <summary>
    /// rows × rowBytes from src (row stride srcStride) to the contiguous dst, rowBytes a multiple of 32 (a sliver row:
    /// 2 vectors), with vector moves instead of a copy call per 64–128-byte row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void CopyRows(byte* src, nint srcStride, byte* dst, int rowBytes, int rows)
    {
        if (rowBytes % 64 == 0 && Vector512.IsHardwareAccelerated)
        {
            for (int r = 0; r < rows; r++, src += srcStride, dst += rowBytes)
                for (int o = 0; o < rowBytes; o += 64) Vector512.Store(Vector512.Load(src + o), dst + o);
        }
        else if (rowBytes % 32 == 0 && Vector256.IsHardwareAccelerated)
        {
            for (int r = 0; r < rows; r++, src += srcStride, dst += rowBytes)
                for (int o = 0; o < rowBytes; o += 32) Vector256.Store(Vector256.Load(src + o), dst + o);
        }
        else
        {
            for (int r = 0; r < rows; r++, src += srcStride, dst += rowBytes)
                new ReadOnlySpan<byte>(src, rowBytes).CopyTo(new Span<byte>(dst, rowBytes));
        }
    }

    /// <summary>op(B) from 16-bit words (binary16 or bfloat16), widened to float while packing.</summary>
    private readonly struct PackWide16 : IPackB<float>
    {
        private readonly ushort* _b;
        private readonly int _ldb;
        private readonly bool _trans;
        private readonly bool _bf16;

        public PackWide16(ushort* b, int ldb, bool trans, bool bf16) { _b = b; _ldb = ldb; _trans = trans; _bf16 = bf16; }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Pack(int p0, int kc, int j0, int j1, int nr, float* dst)
        {
            if (!_trans)
            {
                // B stored K×N: widen row k's run [j0, j1) once, then deal it out to the slivers.
                int n = j1 - j0;
                float[] rowArr = ArrayPool<float>.Shared.Rent(n);
                fixed (float* row = rowArr)
                {
                    for (int k = 0; k < kc; k++)
                    {
                        Widen(_b + (nint)(p0 + k) * _ldb + j0, row, n, _bf16);
                        float* d = dst + (nint)k * nr;
                        for (int j = 0; j < n; j += nr, d += (nint)kc * nr)
                        {
                            int w = Math.Min(nr, n - j);
                            new ReadOnlySpan<float>(row + j, w).CopyTo(new Span<float>(d, w));
                            if (w < nr) new Span<float>(d + w, nr - w).Clear();
                        }
                    }
                }
                ArrayPool<float>.Shared.Return(rowArr);
            }
            else
            {
                // B stored N×K: widen the sliver's rows of B over [p0, p0+kc), then transpose them into the sliver.
                float[] rowsArr = ArrayPool<float>.Shared.Rent(nr * kc);
                fixed (float* rows = rowsArr)
                {
                    for (int j = j0; j < j1; j += nr, dst += (nint)kc * nr)
                    {
                        int w = Math.Min(nr, j1 - j);
                        for (int c = 0; c < w; c++) Widen(_b + (nint)(j + c) * _ldb + p0, rows + (nint)c * kc, kc, _bf16);
                        PackTransposed(rows, kc, w, kc, dst, nr);
                    }
                }
                ArrayPool<float>.Shared.Return(rowsArr);
            }
        }
    }

    /// <summary>dst[0..n) = float(src[0..n)) for binary16 (bf16 == false) or bfloat16 words. Exact.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Widen(ushort* src, float* dst, int n, bool bf16)
    {
        if (!bf16)
        {
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, n), new Span<float>(dst, n));
            return;
        }
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= n - Vector512<ushort>.Count; i += Vector512<ushort>.Count)
            {
                (Vector512<uint> lo, Vector512<uint> hi) = Vector512.Widen(Vector512.Load(src + i));
                Vector512.ShiftLeft(lo, 16).AsSingle().Store(dst + i);
                Vector512.ShiftLeft(hi, 16).AsSingle().Store(dst + i + Vector512<uint>.Count);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= n - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
            {
                (Vector256<uint> lo, Vector256<uint> hi) = Vector256.Widen(Vector256.Load(src + i));
                Vector256.ShiftLeft(lo, 16).AsSingle().Store(dst + i);
                Vector256.ShiftLeft(hi, 16).AsSingle().Store(dst + i + Vector256<uint>.Count);
            }
        }
        for (; i < n; i++) dst[i] = BitConverter.Int32BitsToSingle(src[i] << 16);
    }

    /// <summary>
    /// Packs op(A)[i0:i0+mc, p0:p0+kc] into MR-tall slivers: dst[(i/mr)·kc·mr + k·mr + i%mr]; rows past mc are zero.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA<T>(T* a /* op(A): M×K */, int lda, bool trans, int i0, int mc, int p0, int kc, int mr, T* dst)
        where T : unmanaged
    {
        for (int s = 0; s < mc; s += mr, dst += (nint)kc * mr)
        {
            int h = Math.Min(mr, mc - s);
            if (trans)
            {
                // A stored K×M: each k-row of the sliver is a contiguous run of A.
                T* src = a + (nint)p0 * lda + i0 + s;
                for (int k = 0; k < kc; k++, src += lda)
                {
                    T* d = dst + (nint)k * mr;
                    int r = 0;
                    for (; r < h; r++) d[r] = src[r];
                    for (; r < mr; r++) d[r] = default;
                }
            }
            else
            {
                // A stored M×K: row i of op(A) is contiguous over k; write it down a sliver column.
                PackTransposed(a + (nint)(i0 + s) * lda + p0, lda, h, kc, dst, mr);
            }
        }
    }

    // ───────────────────────────── transposing copies ─────────────────────────────

    /// <summary>
    /// dst[k·width + r] = src[r·ld + k] for r &lt; rows, and 0 for rows ≤ r &lt; width; k &lt; kc.
    /// Packs the rows of a row-major source down the columns of a sliver (op(A) rows, or Bᵀ rows).
    /// With AVX-512 it works in W×W register transposes (W = 16 floats / 8 doubles), with AVX in 8×8 / 4×4 ones.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackTransposed<T>(T* src /* rows×kc, stride ld */, nint ld, int rows, int kc, T* dst /* kc×width */, int width)
        where T : unmanaged
    {
        int k = 0;
        if (Avx512F.IsSupported && (typeof(T) == typeof(float) || typeof(T) == typeof(double)))
        {
            int w = Vector512<T>.Count;
            for (; k + w <= kc; k += w)
            {
                for (int r0 = 0; r0 < width; r0 += w)
                {
                    int valid = Math.Clamp(rows - r0, 0, w), lanes = Math.Min(w, width - r0);
                    if (typeof(T) == typeof(float))
                        Transpose16x16((float*)src + r0 * ld + k, ld, valid, lanes, (float*)dst + (nint)k * width + r0, width);
                    else
                        Transpose8x8((double*)src + r0 * ld + k, ld, valid, lanes, (double*)dst + (nint)k * width + r0, width);
                }
            }
        }
        else if (Avx.IsSupported && (typeof(T) == typeof(float) || typeof(T) == typeof(double)))
        {
            int w = Vector256<T>.Count;
            for (; k + w <= kc; k += w)
            {
                for (int r0 = 0; r0 < width; r0 += w)
                {
                    int valid = Math.Clamp(rows - r0, 0, w), lanes = Math.Min(w, width - r0);
                    if (typeof(T) == typeof(float))
                        Transpose8x8Avx((float*)src + r0 * ld + k, ld, valid, lanes, (float*)dst + (nint)k * width + r0, width);
                    else
                        Transpose4x4Avx((double*)src + r0 * ld + k, ld, valid, lanes, (double*)dst + (nint)k * width + r0, width);
                }
            }
        }
        for (; k < kc; k++)
        {
            T* d = dst + (nint)k * width;
            int r = 0;
            for (; r < rows; r++) d[r] = src[r * ld + k];
            for (; r < width; r++) d[r] = default;
        }
    }

    /// <summary>
    /// Reads rows [0, valid) of a 16×16 float block (rows past valid count as zero), writes its transpose:
    /// dst[j·ldd + i] = src[i·ld + j] for j &lt; 16 and i &lt; lanes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose16x16(float* src, nint ld, int valid, int lanes, float* dst, nint ldd)
    {
        Vector512<float> r0 = LoadRow(src, ld, 0, valid), r1 = LoadRow(src, ld, 1, valid), r2 = LoadRow(src, ld, 2, valid), r3 = LoadRow(src, ld, 3, valid);
        Vector512<float> r4 = LoadRow(src, ld, 4, valid), r5 = LoadRow(src, ld, 5, valid), r6 = LoadRow(src, ld, 6, valid), r7 = LoadRow(src, ld, 7, valid);
        Vector512<float> r8 = LoadRow(src, ld, 8, valid), r9 = LoadRow(src, ld, 9, valid), r10 = LoadRow(src, ld, 10, valid), r11 = LoadRow(src, ld, 11, valid);
        Vector512<float> r12 = LoadRow(src, ld, 12, valid), r13 = LoadRow(src, ld, 13, valid), r14 = LoadRow(src, ld, 14, valid), r15 = LoadRow(src, ld, 15, valid);
        // 32-bit interleave of row pairs (within 128-bit lanes).
        Vector512<float> t0 = Avx512F.UnpackLow(r0, r1), t1 = Avx512F.UnpackHigh(r0, r1);
        Vector512<float> t2 = Avx512F.UnpackLow(r2, r3), t3 = Avx512F.UnpackHigh(r2, r3);
        Vector512<float> t4 = Avx512F.UnpackLow(r4, r5), t5 = Avx512F.UnpackHigh(r4, r5);
        Vector512<float> t6 = Avx512F.UnpackLow(r6, r7), t7 = Avx512F.UnpackHigh(r6, r7);
        Vector512<float> t8 = Avx512F.UnpackLow(r8, r9), t9 = Avx512F.UnpackHigh(r8, r9);
        Vector512<float> t10 = Avx512F.UnpackLow(r10, r11), t11 = Avx512F.UnpackHigh(r10, r11);
        Vector512<float> t12 = Avx512F.UnpackLow(r12, r13), t13 = Avx512F.UnpackHigh(r12, r13);
        Vector512<float> t14 = Avx512F.UnpackLow(r14, r15), t15 = Avx512F.UnpackHigh(r14, r15);
        // 64-bit pairs: u[4g+q], 128-bit lane L = rows 4g..4g+3 of column 4L+q.
        Vector512<float> u0 = Avx512F.Shuffle(t0, t2, 0x44), u1 = Avx512F.Shuffle(t0, t2, 0xEE);
        Vector512<float> u2 = Avx512F.Shuffle(t1, t3, 0x44), u3 = Avx512F.Shuffle(t1, t3, 0xEE);
        Vector512<float> u4 = Avx512F.Shuffle(t4, t6, 0x44), u5 = Avx512F.Shuffle(t4, t6, 0xEE);
        Vector512<float> u6 = Avx512F.Shuffle(t5, t7, 0x44), u7 = Avx512F.Shuffle(t5, t7, 0xEE);
        Vector512<float> u8 = Avx512F.Shuffle(t8, t10, 0x44), u9 = Avx512F.Shuffle(t8, t10, 0xEE);
        Vector512<float> u10 = Avx512F.Shuffle(t9, t11, 0x44), u11 = Avx512F.Shuffle(t9, t11, 0xEE);
        Vector512<float> u12 = Avx512F.Shuffle(t12, t14, 0x44), u13 = Avx512F.Shuffle(t12, t14, 0xEE);
        Vector512<float> u14 = Avx512F.Shuffle(t13, t15, 0x44), u15 = Avx512F.Shuffle(t13, t15, 0xEE);
        Vector512<float> mask = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(lanes)).AsSingle();
        // 128-bit lanes: columns q, q+4, q+8, q+12 from the four row groups.
        for (int q = 0; q < 4; q++)
        {
            (Vector512<float> g0, Vector512<float> g1, Vector512<float> g2, Vector512<float> g3) = q switch
            {
                0 => (u0, u4, u8, u12),
                1 => (u1, u5, u9, u13),
                2 => (u2, u6, u10, u14),
                _ => (u3, u7, u11, u15),
            };
            Vector512<float> v0 = Avx512F.Shuffle4x128(g0, g1, 0x88), v1 = Avx512F.Shuffle4x128(g0, g1, 0xDD);
            Vector512<float> v2 = Avx512F.Shuffle4x128(g2, g3, 0x88), v3 = Avx512F.Shuffle4x128(g2, g3, 0xDD);
            StoreLanes(dst + q * ldd, Avx512F.Shuffle4x128(v0, v2, 0x88), lanes, mask);
            StoreLanes(dst + (q + 4) * ldd, Avx512F.Shuffle4x128(v1, v3, 0x88), lanes, mask);
            StoreLanes(dst + (q + 8) * ldd, Avx512F.Shuffle4x128(v0, v2, 0xDD), lanes, mask);
            StoreLanes(dst + (q + 12) * ldd, Avx512F.Shuffle4x128(v1, v3, 0xDD), lanes, mask);
        }
    }

    /// <summary>The double counterpart of <see cref="Transpose16x16"/> on an 8×8 block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose8x8(double* src, nint ld, int valid, int lanes, double* dst, nint ldd)
    {
        Vector512<double> r0 = LoadRow(src, ld, 0, valid), r1 = LoadRow(src, ld, 1, valid), r2 = LoadRow(src, ld, 2, valid), r3 = LoadRow(src, ld, 3, valid);
        Vector512<double> r4 = LoadRow(src, ld, 4, valid), r5 = LoadRow(src, ld, 5, valid), r6 = LoadRow(src, ld, 6, valid), r7 = LoadRow(src, ld, 7, valid);
        // 64-bit interleave of row pairs: 128-bit lane L of t = rows (2p, 2p+1) of column 2L (+1 for the High half).
        Vector512<double> t0 = Avx512F.UnpackLow(r0, r1), t1 = Avx512F.UnpackHigh(r0, r1);
        Vector512<double> t2 = Avx512F.UnpackLow(r2, r3), t3 = Avx512F.UnpackHigh(r2, r3);
        Vector512<double> t4 = Avx512F.UnpackLow(r4, r5), t5 = Avx512F.UnpackHigh(r4, r5);
        Vector512<double> t6 = Avx512F.UnpackLow(r6, r7), t7 = Avx512F.UnpackHigh(r6, r7);
        Vector512<double> mask = Vector512.LessThan(Vector512<long>.Indices, Vector512.Create((long)lanes)).AsDouble();
        // Columns q, q+2, q+4, q+6.
        for (int q = 0; q < 2; q++)
        {
            (Vector512<double> a, Vector512<double> b, Vector512<double> c, Vector512<double> d) = q == 0 ? (t0, t2, t4, t6) : (t1, t3, t5, t7);
            Vector512<double> u0 = Avx512F.Shuffle4x128(a, b, 0x88), u1 = Avx512F.Shuffle4x128(a, b, 0xDD);
            Vector512<double> u2 = Avx512F.Shuffle4x128(c, d, 0x88), u3 = Avx512F.Shuffle4x128(c, d, 0xDD);
            StoreLanes(dst + q * ldd, Avx512F.Shuffle4x128(u0, u2, 0x88), lanes, mask);
            StoreLanes(dst + (q + 4) * ldd, Avx512F.Shuffle4x128(u0, u2, 0xDD), lanes, mask);
            StoreLanes(dst + (q + 2) * ldd, Avx512F.Shuffle4x128(u1, u3, 0x88), lanes, mask);
            StoreLanes(dst + (q + 6) * ldd, Avx512F.Shuffle4x128(u1, u3, 0xDD), lanes, mask);
        }
    }

    /// <summary>The AVX (256-bit) counterpart of <see cref="Transpose16x16"/> on an 8×8 float block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose8x8Avx(float* src, nint ld, int valid, int lanes, float* dst, nint ldd)
    {
        Vector256<float> r0 = LoadRow256(src, ld, 0, valid), r1 = LoadRow256(src, ld, 1, valid), r2 = LoadRow256(src, ld, 2, valid), r3 = LoadRow256(src, ld, 3, valid);
        Vector256<float> r4 = LoadRow256(src, ld, 4, valid), r5 = LoadRow256(src, ld, 5, valid), r6 = LoadRow256(src, ld, 6, valid), r7 = LoadRow256(src, ld, 7, valid);
        // 32-bit interleave of row pairs (within 128-bit lanes): t0 = r0[0] r1[0] r0[1] r1[1] | r0[4] r1[4] r0[5] r1[5].
        Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1), t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
        Vector256<float> t4 = Avx.UnpackLow(r4, r5), t5 = Avx.UnpackHigh(r4, r5), t6 = Avx.UnpackLow(r6, r7), t7 = Avx.UnpackHigh(r6, r7);
        // 64-bit pairs: u0 = rows 0–3 of column 0 | of column 4, u1 columns 1 | 5, u2 2 | 6, u3 3 | 7; u4–u7 rows 4–7.
        Vector256<float> u0 = Avx.Shuffle(t0, t2, 0x44), u1 = Avx.Shuffle(t0, t2, 0xEE), u2 = Avx.Shuffle(t1, t3, 0x44), u3 = Avx.Shuffle(t1, t3, 0xEE);
        Vector256<float> u4 = Avx.Shuffle(t4, t6, 0x44), u5 = Avx.Shuffle(t4, t6, 0xEE), u6 = Avx.Shuffle(t5, t7, 0x44), u7 = Avx.Shuffle(t5, t7, 0xEE);
        Vector256<float> mask = Vector256.LessThan(Vector256<int>.Indices, Vector256.Create(lanes)).AsSingle();
        StoreLanes(dst + 0 * ldd, Avx.Permute2x128(u0, u4, 0x20), lanes, mask);
        StoreLanes(dst + 1 * ldd, Avx.Permute2x128(u1, u5, 0x20), lanes, mask);
        StoreLanes(dst + 2 * ldd, Avx.Permute2x128(u2, u6, 0x20), lanes, mask);
        StoreLanes(dst + 3 * ldd, Avx.Permute2x128(u3, u7, 0x20), lanes, mask);
        StoreLanes(dst + 4 * ldd, Avx.Permute2x128(u0, u4, 0x31), lanes, mask);
        StoreLanes(dst + 5 * ldd, Avx.Permute2x128(u1, u5, 0x31), lanes, mask);
        StoreLanes(dst + 6 * ldd, Avx.Permute2x128(u2, u6, 0x31), lanes, mask);
        StoreLanes(dst + 7 * ldd, Avx.Permute2x128(u3, u7, 0x31), lanes, mask);
    }

    /// <summary>The double counterpart of <see cref="Transpose8x8Avx"/> on a 4×4 block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose4x4Avx(double* src, nint ld, int valid, int lanes, double* dst, nint ldd)
    {
        Vector256<double> r0 = LoadRow256(src, ld, 0, valid), r1 = LoadRow256(src, ld, 1, valid), r2 = LoadRow256(src, ld, 2, valid), r3 = LoadRow256(src, ld, 3, valid);
        // t0 = r0[0] r1[0] | r0[2] r1[2], t1 = r0[1] r1[1] | r0[3] r1[3]; t2, t3 the same for rows 2, 3.
        Vector256<double> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1), t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
        Vector256<double> mask = Vector256.LessThan(Vector256<long>.Indices, Vector256.Create((long)lanes)).AsDouble();
        StoreLanes(dst + 0 * ldd, Avx.Permute2x128(t0, t2, 0x20), lanes, mask);
        StoreLanes(dst + 1 * ldd, Avx.Permute2x128(t1, t3, 0x20), lanes, mask);
        StoreLanes(dst + 2 * ldd, Avx.Permute2x128(t0, t2, 0x31), lanes, mask);
        StoreLanes(dst + 3 * ldd, Avx.Permute2x128(t1, t3, 0x31), lanes, mask);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<T> LoadRow256<T>(T* src, nint ld, int i, int valid) where T : unmanaged
        => i < valid ? Vector256.Load(src + i * ld) : Vector256<T>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreLanes(float* p, Vector256<float> v, int lanes, Vector256<float> mask)
    {
        if (lanes == Vector256<float>.Count) v.Store(p);
        else Avx.MaskStore(p, mask, v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreLanes(double* p, Vector256<double> v, int lanes, Vector256<double> mask)
    {
        if (lanes == Vector256<double>.Count) v.Store(p);
        else Avx.MaskStore(p, mask, v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<T> LoadRow<T>(T* src, nint ld, int i, int valid) where T : unmanaged
        => i < valid ? Vector512.Load(src + i * ld) : Vector512<T>.Zero;

    /// <summary>Stores the first <paramref name="lanes"/> lanes of v (all when the vector is full; masked otherwise).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreLanes(float* p, Vector512<float> v, int lanes, Vector512<float> mask)
    {
        if (lanes == Vector512<float>.Count) v.Store(p);
        else Avx512F.MaskStore(p, mask, v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreLanes(double* p, Vector512<double> v, int lanes, Vector512<double> mask)
    {
        if (lanes == Vector512<double>.Count) v.Store(p);
        else Avx512F.MaskStore(p, mask, v);
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;
    private static int RoundUp(int a, int b) => CeilDiv(a, b) * b;
    private static T* Align64<T>(T* p) where T : unmanaged => (T*)(((nint)p + 63) & ~(nint)63);

    // ───────────────────────────── packed (blocked) path ─────────────────────────────

    /// <summary>Most rows (or columns) for StreamB: up to 4 A slivers re-read each B block from L1 instead of packing B.</summary>
    private const int StreamRows = 48;
    /// <summary>Most rows (or columns) for DotRows: measured faster than packing a transposed B up to about 32 rows.</summary>
    private const int DotRowsMax = 32;

    private static int ThreadsFor(int M, int N, int K, long threshold = ParallelThreshold) => (long)M * N * K >= threshold ? Threads : 1;

    /// <summary>Path choice for T-typed operands. Depends on the shape and transposes only.</summary>
    private static void DispatchDirect<T, TV, TS>(bool transA, bool transB, int M, int N, int K, T alpha,
        T* a /* op(A): M×K */, int lda, T* b /* op(B): K×N */, int ldb, T beta, T* c /* M×N */, int ldc)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : unmanaged where TS : ISimd<T, TV>
    {
        int threads = ThreadsFor(M, N, K);
        if (M <= StreamRows && M <= N)
        {
            if (!transB)
            {
                StreamB<T, TV, TS>.Run(M, N, K, alpha, a, lda, transA, b, ldb, beta, c, ldc, false, threads);
                return;
            }
            if (M <= DotRowsMax)
            {
                DotRows<T, TV, TS, DirectRows<T>>.Run(M, N, K, alpha, a, lda, transA, new DirectRows<T>(b, ldb), beta, c, ldc, false,
                    ThreadsFor(M, N, K, DotRowsParallelThreshold));
                return;
            }
        }
        else if (N <= StreamRows)
        {
            // Few columns: compute Cᵀ(N×M) = op(B)ᵀ·op(A)ᵀ and store it transposed.
            if (transA)
            {
                StreamB<T, TV, TS>.Run(N, M, K, alpha, b, ldb, !transB, a, lda, beta, c, ldc, true, threads);
                return;
            }
            if (N <= DotRowsMax)
            {
                DotRows<T, TV, TS, DirectRows<T>>.Run(N, M, K, alpha, b, ldb, !transB, new DirectRows<T>(a, lda), beta, c, ldc, true,
                    ThreadsFor(M, N, K, DotRowsParallelThreshold));
                return;
            }
        }
        new Blocked<T, TV, TS, PackDirect<T>>(transA, M, N, K, alpha, a, lda, new PackDirect<T>(b, ldb, transB), beta, c, ldc, threads).Run();
    }

    /// <summary>Path choice for a 16-bit B.</summary>
    private static void DispatchWide16<TV, TS>(bool transA, bool transB, int M, int N, int K, float alpha,
        float* a /* op(A): M×K */, int lda, ushort* b /* op(B): K×N */, int ldb, bool bf16, float beta, float* c /* M×N */, int ldc)
        where TV : unmanaged where TS : ISimd<float, TV>
    {
        bool fewRows = M <= StreamRows && M <= N;
        if (!fewRows && N <= StreamRows)
        {
            // Few columns: B is small (N·K words), so widen it and take exactly the float path.
            int rows = transB ? N : K, cols = transB ? K : N;
            float[] wideArr = ArrayPool<float>.Shared.Rent(rows * cols);
            fixed (float* wide = wideArr)
            {
                for (int r = 0; r < rows; r++) Widen(b + (nint)r * ldb, wide + (nint)r * cols, cols, bf16);
                DispatchDirect<float, TV, TS>(transA, transB, M, N, K, alpha, a, lda, wide, cols, beta, c, ldc);
            }
            ArrayPool<float>.Shared.Return(wideArr);
            return;
        }
        // Otherwise the path matches DispatchDirect's or gives the same bits (StreamB ≡ packed path per element).
        int threads = ThreadsFor(M, N, K);
        if (fewRows && transB && M <= DotRowsMax)
            DotRows<float, TV, TS, Wide16Rows>.Run(M, N, K, alpha, a, lda, transA, new Wide16Rows(b, ldb, K, bf16), beta, c, ldc, false,
                ThreadsFor(M, N, K, DotRowsParallelThreshold));
        else
            new Blocked<float, TV, TS, PackWide16>(transA, M, N, K, alpha, a, lda, new PackWide16(b, ldb, transB, bf16), beta, c, ldc, threads).Run();
    }

    /// <summary>One packed GEMM call: loop nest state shared by the worker threads.</summary>
    private sealed class Blocked<T, TV, TS, TPB>
        where T : unmanaged, IFloatingPointIeee754<T> where TV : unmanaged where TS : ISimd<T, TV> where TPB : struct, IPackB<T>
    {
        private readonly bool _transA;
        private readonly int _m, _n, _k, _lda, _ldc, _threads;
        private readonly T _alpha, _beta;
        private readonly T* _a;
        private readonly T* _c;
        private readonly TPB _packB;
        private readonly Action<int> _packGroup, _item;
        private readonly ParallelOptions _options;

        // Current (jc, pc) panel.
        private int _jc, _nc, _pc, _kc, _slivers, _sliversPerGroup;
        private T _betaPanel;
        private T* _bp;
        // Work items of the current panel: rowBlocks × colBlocks.
        private int _tiles, _rowItems, _colsPerItem, _colItems;

        public Blocked(bool transA, int m, int n, int k, T alpha, T* a, int lda, TPB packB, T beta, T* c, int ldc, int threads)
        {
            _transA = transA; _m = m; _n = n; _k = k; _alpha = alpha; _a = a; _lda = lda;
            _packB = packB; _beta = beta; _c = c; _ldc = ldc; _threads = threads;
            _packGroup = PackGroup;
            _item = Item;
            _options = new ParallelOptions { MaxDegreeOfParallelism = threads };
        }

        private static int Mr => TS.Mr;
        private static int Nr => 2 * TS.Count;

        public void Run()
        {
            int kBlocks = CeilDiv(_k, Kc);
            int kcMax = CeilDiv(_k, kBlocks);
            int ncMax = Math.Min(_n, Nc);
            T[] bArr = ArrayPool<T>.Shared.Rent(kcMax * RoundUp(ncMax, Nr) + 64 / sizeof(T));
            try
            {
                fixed (T* bRaw = bArr)
                {
                    _bp = Align64(bRaw);
                    // Row items of whole tiles, as even as tiles allow (item r: tiles [r·T/R, (r+1)·T/R)).
                    _tiles = CeilDiv(_m, Mr);
                    _rowItems = Math.Min(_tiles, CeilDiv(_m, Mc));
                    for (_jc = 0; _jc < _n; _jc += Nc)
                    {
                        _nc = Math.Min(Nc, _n - _jc);
                        _slivers = CeilDiv(_nc, Nr);
                        // Split the panel's columns too when there are too few row blocks to keep every thread busy.
                        int colItems = 1;
                        while (_threads > 1 && _rowItems * colItems < 2 * _threads && colItems * 2 <= _slivers) colItems *= 2;
                        _colsPerItem = CeilDiv(_slivers, colItems) * Nr;
                        _colItems = CeilDiv(_nc, _colsPerItem);
                        int groups = _threads > 1 && (long)kcMax * _nc >= 1 << 15 ? Math.Min(_threads, _slivers) : 1;
                        _sliversPerGroup = CeilDiv(_slivers, groups);
                        groups = CeilDiv(_slivers, _sliversPerGroup);
                        for (int p = 0; p < kBlocks; p++)
                        {
                            // Balanced K split: block sizes differ by at most one.
                            _pc = (int)((long)p * _k / kBlocks);
                            _kc = (int)((long)(p + 1) * _k / kBlocks) - _pc;
                            _betaPanel = p == 0 ? _beta : T.One;
                            For(groups, _packGroup);
                            For(_rowItems * _colItems, _item);
                        }
                    }
                }
            }
            finally
            {
                ArrayPool<T>.Shared.Return(bArr);
            }
        }

        private void For(int count, Action<int> body)
        {
            if (_threads <= 1 || count <= 1)
                for (int i = 0; i < count; i++) body(i);
            else
                Parallel.For(0, count, _options, body);
        }

        private void PackGroup(int g)
        {
            int s0 = g * _sliversPerGroup;
            int s1 = Math.Min(_slivers, s0 + _sliversPerGroup);
            _packB.Pack(_pc, _kc, _jc + s0 * Nr, Math.Min(_jc + _nc, _jc + s1 * Nr), Nr, _bp + (nint)s0 * Nr * _kc);
        }

        private void Item(int index)
        {
            int mr = Mr, nr = Nr, kc = _kc;
            int r = index / _colItems;
            int i0 = (int)((long)r * _tiles / _rowItems) * mr;
            int mc = Math.Min((int)((long)(r + 1) * _tiles / _rowItems) * mr, _m) - i0;
            int j0 = index % _colItems * _colsPerItem;
            int j1 = Math.Min(j0 + _colsPerItem, _nc);
            T* tile = stackalloc T[mr * nr];
            T[] aArr = ArrayPool<T>.Shared.Rent(RoundUp(mc, mr) * kc + 64 / sizeof(T));
            fixed (T* aRaw = aArr)
            {
                T* ap = Align64(aRaw);
                PackA(_a, _lda, _transA, i0, mc, _pc, kc, mr, ap);
                for (int jr = j0; jr < j1; jr += nr)
                {
                    T* bs = _bp + (nint)jr * kc;
                    int w = Math.Min(nr, _nc - jr);
                    T* cp = _c + (nint)i0 * _ldc + _jc + jr;
                    for (int ir = 0; ir < mc; ir += mr, cp += (nint)mr * _ldc)
                    {
                        int h = Math.Min(mr, mc - ir);
                        T* asl = ap + (nint)ir * kc;
                        if (h == mr && w == nr)
                            Kernel<T, TV, TS>(mr, kc, asl, bs, nr, cp, _ldc, _alpha, _betaPanel);
                        else
                            EdgeTile<T, TV, TS>(mr, kc, asl, bs, nr, cp, _ldc, false, h, w, _alpha, _betaPanel, tile);
                    }
                }
            }
            ArrayPool<T>.Shared.Return(aArr);
        }
    }

    /// <summary>Runs the micro-kernel of height <paramref name="mr"/> (12 or 6) on a full tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Kernel<T, TV, TS>(int mr, int kc, T* a /* [kc][mr] */, T* b /* [kc][2W], stride bStride */, nint bStride,
        T* c /* mr×2W, stride ldc */, nint ldc, T alpha, T beta)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : unmanaged where TS : ISimd<T, TV>
    {
        if (mr == 12) Kernel12x2<T, TV, TS>(kc, a, b, bStride, c, ldc, alpha, beta);
        else Kernel6x2<T, TV, TS>(kc, a, b, bStride, c, ldc, alpha, beta);
    }

    /// <summary>
    /// A partial h×w tile (matrix edge), or any tile of a transposed output (C element (i, j) stored at c[j·ldc + i]):
    /// runs the full micro-kernel on a scratch tile loaded with the valid part of C, then copies that part back.
    /// The arithmetic per element is the same as for a full tile.
    /// </summary>
    private static void EdgeTile<T, TV, TS>(int mr, int kc, T* a, T* b, nint bStride, T* c /* tile origin */, int ldc, bool transOut,
        int h, int w, T alpha, T beta, T* tile /* mr × 2W scratch */)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : unmanaged where TS : ISimd<T, TV>
    {
        int nr = 2 * TS.Count;
        if (beta != T.Zero)
        {
            for (int r = 0; r < h; r++)
            {
                T* t = tile + (nint)r * nr;
                if (transOut) for (int q = 0; q < w; q++) t[q] = c[(nint)q * ldc + r];
                else new ReadOnlySpan<T>(c + (nint)r * ldc, w).CopyTo(new Span<T>(t, w));
            }
        }
        Kernel<T, TV, TS>(mr, kc, a, b, bStride, tile, nr, alpha, beta);
        for (int r = 0; r < h; r++)
        {
            T* t = tile + (nint)r * nr;
            if (transOut) for (int q = 0; q < w; q++) c[(nint)q * ldc + r] = t[q];
            else new ReadOnlySpan<T>(t, w).CopyTo(new Span<T>(c + (nint)r * ldc, w));
        }
    }

    // ───────────────────────────── skinny paths ─────────────────────────────

    /// <summary>
    /// Few rows, op(B) rows contiguous: op(A) (small) is packed whole, B is read in place by the same micro-kernels
    /// (row stride ldb instead of the packed sliver's 2W), so the big operand is read once and never copied.
    /// Same K split, kernel and write-back as the packed path, hence the same bits per element.
    /// With transOut the logical m×n result is stored transposed (element (i, j) at c[j·ldc + i]); this serves
    /// few-column problems through Cᵀ = op(B)ᵀ·op(A)ᵀ.
    /// </summary>
    private sealed class StreamB<T, TV, TS>
        where T : unmanaged, IFloatingPointIeee754<T> where TV : unmanaged where TS : ISimd<T, TV>
    {
        private readonly int _m, _n, _k, _mr, _ldb, _ldc, _kBlocks, _colsPerChunk, _threads;
        private readonly T _alpha, _beta;
        private readonly T* _ap;
        private readonly T* _b;
        private readonly T* _c;
        private readonly bool _transOut;

        private StreamB(int m, int n, int k, int mr, T alpha, T* ap, T* b, int ldb, T beta, T* c, int ldc, bool transOut, int threads)
        {
            _m = m; _n = n; _k = k; _mr = mr; _alpha = alpha; _ap = ap; _b = b; _ldb = ldb; _beta = beta; _c = c; _ldc = ldc;
            _transOut = transOut; _threads = threads;
            _kBlocks = CeilDiv(k, Kc);
            int colBlocks = CeilDiv(n, Nr);
            int chunks = threads > 1 ? Math.Min(colBlocks, 4 * threads) : 1;
            _colsPerChunk = CeilDiv(colBlocks, chunks) * Nr;
        }

        private static int Nr => 2 * TS.Count;

        public static void Run(int m, int n, int k, T alpha, T* a /* op(A): m×k */, int lda, bool transA,
            T* b /* k×n, stride ldb */, int ldb, T beta, T* c, int ldc, bool transOut, int threads)
        {
            int mr = m <= 6 ? 6 : TS.Mr;
            T[] aArr = ArrayPool<T>.Shared.Rent(RoundUp(m, mr) * k + 64 / sizeof(T));
            fixed (T* aRaw = aArr)
            {
                T* ap = Align64(aRaw);
                PackA(a, lda, transA, 0, m, 0, k, mr, ap);
                var job = new StreamB<T, TV, TS>(m, n, k, mr, alpha, ap, b, ldb, beta, c, ldc, transOut, threads);
                int chunks = CeilDiv(n, job._colsPerChunk);
                if (threads <= 1 || chunks <= 1)
                    for (int i = 0; i < chunks; i++) job.Chunk(i);
                else
                    Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, job.Chunk);
            }
            ArrayPool<T>.Shared.Return(aArr);
        }

        private void Chunk(int index)
        {
            int nr = Nr;
            int j0 = index * _colsPerChunk, j1 = Math.Min(_n, j0 + _colsPerChunk);
            T* tile = stackalloc T[_mr * nr];
            int full = j0 + (j1 - j0) / nr * nr;
            T[]? tailArr = full < j1 ? ArrayPool<T>.Shared.Rent(_k * nr + 64 / sizeof(T)) : null;
            fixed (T* tailRaw = tailArr)
            {
                // The last, partial column block cannot be read 2W wide in place: pack those few columns.
                T* tail = tailArr != null ? Align64(tailRaw) : null;
                if (tail != null) new PackDirect<T>(_b, _ldb, false).Pack(0, _k, full, j1, nr, tail);
                // Groups of column blocks: per K block, consecutive blocks read adjacent runs of the same B rows,
                // so each row is visited once per group (pages and lines stay hot) instead of once per block.
                for (int g0 = j0; g0 < j1; g0 += GroupBlocks * nr)
                {
                    int g1 = Math.Min(j1, g0 + GroupBlocks * nr);
                    for (int p = 0; p < _kBlocks; p++)
                    {
                        int pc = (int)((long)p * _k / _kBlocks);
                        int kc = (int)((long)(p + 1) * _k / _kBlocks) - pc;
                        T betaPanel = p == 0 ? _beta : T.One;
                        for (int jr = g0; jr < g1; jr += nr)
                        {
                            if (jr < full) Block(jr, nr, _b + (nint)pc * _ldb + jr, _ldb, pc, kc, betaPanel, tile);
                            else Block(jr, j1 - jr, tail + (nint)pc * nr, nr, pc, kc, betaPanel, tile);
                        }
                    }
                }
            }
            if (tailArr != null) ArrayPool<T>.Shared.Return(tailArr);
        }

        /// <summary>Column blocks per group in <see cref="Chunk"/>: 8 × 2W floats = 1 KiB of each B row.</summary>
        private const int GroupBlocks = 8;

        /// <summary>Result columns [jr, jr+w), all rows, K block [pc, pc+kc); bs = B row pc at column jr, row stride bStride.</summary>
        private void Block(int jr, int w, T* bs /* kc×2W, stride bStride */, nint bStride, int pc, int kc, T betaPanel, T* tile)
        {
            int mr = _mr, nr = Nr;
            for (int s = 0; s < _m; s += mr)
            {
                int h = Math.Min(mr, _m - s);
                T* asl = _ap + (nint)s * _k + (nint)pc * mr;
                if (_transOut)
                    EdgeTile<T, TV, TS>(mr, kc, asl, bs, bStride, _c + (nint)jr * _ldc + s, _ldc, true, h, w, _alpha, betaPanel, tile);
                else if (h == mr && w == nr)
                    Kernel<T, TV, TS>(mr, kc, asl, bs, bStride, _c + (nint)s * _ldc + jr, _ldc, _alpha, betaPanel);
                else
                    EdgeTile<T, TV, TS>(mr, kc, asl, bs, bStride, _c + (nint)s * _ldc + jr, _ldc, false, h, w, _alpha, betaPanel, tile);
            }
        }
    }

    /// <summary>Rows of length k for the dot-product path: in place, or widened from 16-bit words into scratch.</summary>
    private interface IRowSource<T> where T : unmanaged
    {
        bool NeedsScratch { get; }
        /// <summary>Pointer to row j (k contiguous elements); may fill and return <paramref name="scratch"/> (k elements).</summary>
        T* Row(int j, T* scratch);
    }

    private readonly struct DirectRows<T> : IRowSource<T> where T : unmanaged
    {
        private readonly T* _p;
        private readonly int _ld;
        public DirectRows(T* p, int ld) { _p = p; _ld = ld; }
        public bool NeedsScratch => false;
        public T* Row(int j, T* scratch) => _p + (nint)j * _ld;
    }

    private readonly struct Wide16Rows : IRowSource<float>
    {
        private readonly ushort* _p;
        private readonly int _ld, _k;
        private readonly bool _bf16;
        public Wide16Rows(ushort* p, int ld, int k, bool bf16) { _p = p; _ld = ld; _k = k; _bf16 = bf16; }
        public bool NeedsScratch => true;
        public float* Row(int j, float* scratch)
        {
            Widen(_p + (nint)j * _ld, scratch, _k, _bf16);
            return scratch;
        }
    }

    /// <summary>
    /// Few rows, op(B) columns contiguous (B stored N×K, e.g. a single token times Wᵀ): every C element is a dot product
    /// of two contiguous k-runs, computed 4×4 at a time with vector FMA chains. B is read once, in place.
    /// With transOut the logical m×n result is stored transposed (element (i, j) at c[j·ldc + i]).
    /// </summary>
    private sealed class DotRows<T, TV, TS, TR>
        where T : unmanaged, IFloatingPointIeee754<T> where TV : unmanaged where TS : ISimd<T, TV> where TR : struct, IRowSource<T>
    {
        private readonly int _m, _n, _k, _lda, _ldc, _colsPerChunk;
        private readonly T _alpha, _beta;
        private readonly T* _a;
        private readonly T* _c;
        private readonly TR _rows;
        private readonly bool _transOut;

        private DotRows(int m, int n, int k, T alpha, T* a, int lda, TR rows, T beta, T* c, int ldc, bool transOut, int threads)
        {
            _m = m; _n = n; _k = k; _alpha = alpha; _a = a; _lda = lda; _rows = rows; _beta = beta; _c = c; _ldc = ldc;
            _transOut = transOut;
            int quads = CeilDiv(n, 4);
            int chunks = threads > 1 ? Math.Min(quads, 8 * threads) : 1;
            _colsPerChunk = CeilDiv(quads, chunks) * 4;
        }

        /// <param name="a">op(A), m×k: rows a + i·lda when !transA, else A stored k×m and gathered into rows first.</param>
        /// <param name="rows">row j of the source = column j of op(B), j &lt; n.</param>
        public static void Run(int m, int n, int k, T alpha, T* a, int lda, bool transA, TR rows, T beta, T* c, int ldc,
            bool transOut, int threads)
        {
            T[]? gathered = transA ? ArrayPool<T>.Shared.Rent(m * k) : null;
            fixed (T* g = gathered)
            {
                if (transA) PackTransposed(a, lda, k, m, g, k);  // g[i·k + kk] = A[kk·lda + i]
                var job = new DotRows<T, TV, TS, TR>(m, n, k, alpha, transA ? g : a, transA ? k : lda, rows, beta, c, ldc, transOut, threads);
                int chunks = CeilDiv(n, job._colsPerChunk);
                if (threads <= 1 || chunks <= 1)
                    for (int i = 0; i < chunks; i++) job.Chunk(i);
                else
                    Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, job.Chunk);
            }
            if (gathered != null) ArrayPool<T>.Shared.Return(gathered);
        }

        private void Chunk(int index)
        {
            int j0 = index * _colsPerChunk, j1 = Math.Min(_n, j0 + _colsPerChunk);
            T* sums = stackalloc T[16];
            T[]? scratchArr = _rows.NeedsScratch ? ArrayPool<T>.Shared.Rent(4 * _k) : null;
            fixed (T* scratch = scratchArr)
            {
                T** b = stackalloc T*[4];
                for (int jb = j0; jb < j1; jb += 4)
                {
                    int jn = Math.Min(4, j1 - jb);
                    // Past the last column, repeat it: computed, never stored.
                    for (int q = 0; q < 4; q++)
                        b[q] = q < jn ? _rows.Row(jb + q, scratch + (nint)q * _k) : b[jn - 1];
                    for (int ib = 0; ib < _m; ib += 4)
                    {
                        int inn = Math.Min(4, _m - ib);
                        T* a0 = _a + (nint)ib * _lda;
                        T* a1 = _a + (nint)(ib + Math.Min(1, inn - 1)) * _lda;
                        T* a2 = _a + (nint)(ib + Math.Min(2, inn - 1)) * _lda;
                        T* a3 = _a + (nint)(ib + Math.Min(3, inn - 1)) * _lda;
                        if (TS.Count * sizeof(T) == 64)
                            Dot4x4<T, TV, TS>(_k, a0, a1, a2, a3, b[0], b[1], b[2], b[3], sums);
                        else
                        {
                            // 16 registers: 16 accumulators and 8 operands would spill, so two 2×4 passes (same bits per element).
                            Dot2x4<T, TV, TS>(_k, a0, a1, b[0], b[1], b[2], b[3], sums);
                            Dot2x4<T, TV, TS>(_k, a2, a3, b[0], b[1], b[2], b[3], sums + 8);
                        }
                        for (int r = 0; r < inn; r++)
                        {
                            for (int q = 0; q < jn; q++)
                            {
                                T* cp = _transOut ? _c + (nint)(jb + q) * _ldc + ib + r : _c + (nint)(ib + r) * _ldc + jb + q;
                                T s = sums[r * 4 + q];
                                *cp = _beta == T.Zero ? _alpha * s : Mad(_alpha, s, _beta * *cp);
                            }
                        }
                    }
                }
            }
            if (scratchArr != null) ArrayPool<T>.Shared.Return(scratchArr);
        }
    }

    // ───────────────────────────── micro-kernels (fully unrolled: one line per tile row) ─────────────────────────────

    /// <summary>12×(2·W) micro-kernel: C[12, 2W] = alpha·(Ap[kc,12]ᵀ·Bp[kc,2W]) + beta·C (beta == 0: C is overwritten).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel12x2<T, TV, TS>(int kc, T* a /* [kc][12] */, T* b /* [kc][2W], row stride bStride */, nint bStride, T* c /* [12][2W], row stride ldc */, nint ldc, T alpha, T beta)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : unmanaged where TS : ISimd<T, TV>
    {
        int w = TS.Count;
        TV c00 = TS.Zero, c01 = TS.Zero, c10 = TS.Zero, c11 = TS.Zero, c20 = TS.Zero, c21 = TS.Zero, c30 = TS.Zero, c31 = TS.Zero, c40 = TS.Zero, c41 = TS.Zero, c50 = TS.Zero, c51 = TS.Zero, c60 = TS.Zero, c61 = TS.Zero, c70 = TS.Zero, c71 = TS.Zero, c80 = TS.Zero, c81 = TS.Zero, c90 = TS.Zero, c91 = TS.Zero, c100 = TS.Zero, c101 = TS.Zero, c110 = TS.Zero, c111 = TS.Zero;
        for (int k = 0; k < kc; k++)
        {
            TV b0 = TS.Load(b), b1 = TS.Load(b + w);
            TV a0 = TS.Splat(a[0]); c00 = TS.Fma(a0, b0, c00); c01 = TS.Fma(a0, b1, c01);
            TV a1 = TS.Splat(a[1]); c10 = TS.Fma(a1, b0, c10); c11 = TS.Fma(a1, b1, c11);
            TV a2 = TS.Splat(a[2]); c20 = TS.Fma(a2, b0, c20); c21 = TS.Fma(a2, b1, c21);
            TV a3 = TS.Splat(a[3]); c30 = TS.Fma(a3, b0, c30); c31 = TS.Fma(a3, b1, c31);
            TV a4 = TS.Splat(a[4]); c40 = TS.Fma(a4, b0, c40); c41 = TS.Fma(a4, b1, c41);
            TV a5 = TS.Splat(a[5]); c50 = TS.Fma(a5, b0, c50); c51 = TS.Fma(a5, b1, c51);
            TV a6 = TS.Splat(a[6]); c60 = TS.Fma(a6, b0, c60); c61 = TS.Fma(a6, b1, c61);
            TV a7 = TS.Splat(a[7]); c70 = TS.Fma(a7, b0, c70); c71 = TS.Fma(a7, b1, c71);
            TV a8 = TS.Splat(a[8]); c80 = TS.Fma(a8, b0, c80); c81 = TS.Fma(a8, b1, c81);
            TV a9 = TS.Splat(a[9]); c90 = TS.Fma(a9, b0, c90); c91 = TS.Fma(a9, b1, c91);
            TV a10 = TS.Splat(a[10]); c100 = TS.Fma(a10, b0, c100); c101 = TS.Fma(a10, b1, c101);
            TV a11 = TS.Splat(a[11]); c110 = TS.Fma(a11, b0, c110); c111 = TS.Fma(a11, b1, c111);
            a += 12;
            b += bStride;
        }
        TV va = TS.Splat(alpha);
        if (beta == T.Zero)
        {
            TS.Store(c + 0 * ldc, TS.Mul(va, c00)); TS.Store(c + 0 * ldc + w, TS.Mul(va, c01));
            TS.Store(c + 1 * ldc, TS.Mul(va, c10)); TS.Store(c + 1 * ldc + w, TS.Mul(va, c11));
            TS.Store(c + 2 * ldc, TS.Mul(va, c20)); TS.Store(c + 2 * ldc + w, TS.Mul(va, c21));
            TS.Store(c + 3 * ldc, TS.Mul(va, c30)); TS.Store(c + 3 * ldc + w, TS.Mul(va, c31));
            TS.Store(c + 4 * ldc, TS.Mul(va, c40)); TS.Store(c + 4 * ldc + w, TS.Mul(va, c41));
            TS.Store(c + 5 * ldc, TS.Mul(va, c50)); TS.Store(c + 5 * ldc + w, TS.Mul(va, c51));
            TS.Store(c + 6 * ldc, TS.Mul(va, c60)); TS.Store(c + 6 * ldc + w, TS.Mul(va, c61));
            TS.Store(c + 7 * ldc, TS.Mul(va, c70)); TS.Store(c + 7 * ldc + w, TS.Mul(va, c71));
            TS.Store(c + 8 * ldc, TS.Mul(va, c80)); TS.Store(c + 8 * ldc + w, TS.Mul(va, c81));
            TS.Store(c + 9 * ldc, TS.Mul(va, c90)); TS.Store(c + 9 * ldc + w, TS.Mul(va, c91));
            TS.Store(c + 10 * ldc, TS.Mul(va, c100)); TS.Store(c + 10 * ldc + w, TS.Mul(va, c101));
            TS.Store(c + 11 * ldc, TS.Mul(va, c110)); TS.Store(c + 11 * ldc + w, TS.Mul(va, c111));
        }
        else
        {
            TV vb = TS.Splat(beta);
            { T* p = c + 0 * ldc; TS.Store(p, TS.Fma(va, c00, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c01, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 1 * ldc; TS.Store(p, TS.Fma(va, c10, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c11, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 2 * ldc; TS.Store(p, TS.Fma(va, c20, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c21, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 3 * ldc; TS.Store(p, TS.Fma(va, c30, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c31, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 4 * ldc; TS.Store(p, TS.Fma(va, c40, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c41, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 5 * ldc; TS.Store(p, TS.Fma(va, c50, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c51, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 6 * ldc; TS.Store(p, TS.Fma(va, c60, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c61, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 7 * ldc; TS.Store(p, TS.Fma(va, c70, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c71, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 8 * ldc; TS.Store(p, TS.Fma(va, c80, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c81, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 9 * ldc; TS.Store(p, TS.Fma(va, c90, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c91, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 10 * ldc; TS.Store(p, TS.Fma(va, c100, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c101, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 11 * ldc; TS.Store(p, TS.Fma(va, c110, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c111, TS.Mul(vb, TS.Load(p + w)))); }
        }
    }

    /// <summary>6×(2·W) micro-kernel: C[6, 2W] = alpha·(Ap[kc,6]ᵀ·Bp[kc,2W]) + beta·C (beta == 0: C is overwritten).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel6x2<T, TV, TS>(int kc, T* a /* [kc][6] */, T* b /* [kc][2W], row stride bStride */, nint bStride, T* c /* [6][2W], row stride ldc */, nint ldc, T alpha, T beta)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : unmanaged where TS : ISimd<T, TV>
    {
        int w = TS.Count;
        TV c00 = TS.Zero, c01 = TS.Zero, c10 = TS.Zero, c11 = TS.Zero, c20 = TS.Zero, c21 = TS.Zero, c30 = TS.Zero, c31 = TS.Zero, c40 = TS.Zero, c41 = TS.Zero, c50 = TS.Zero, c51 = TS.Zero;
        for (int k = 0; k < kc; k++)
        {
            TV b0 = TS.Load(b), b1 = TS.Load(b + w);
            TV a0 = TS.Splat(a[0]); c00 = TS.Fma(a0, b0, c00); c01 = TS.Fma(a0, b1, c01);
            TV a1 = TS.Splat(a[1]); c10 = TS.Fma(a1, b0, c10); c11 = TS.Fma(a1, b1, c11);
            TV a2 = TS.Splat(a[2]); c20 = TS.Fma(a2, b0, c20); c21 = TS.Fma(a2, b1, c21);
            TV a3 = TS.Splat(a[3]); c30 = TS.Fma(a3, b0, c30); c31 = TS.Fma(a3, b1, c31);
            TV a4 = TS.Splat(a[4]); c40 = TS.Fma(a4, b0, c40); c41 = TS.Fma(a4, b1, c41);
            TV a5 = TS.Splat(a[5]); c50 = TS.Fma(a5, b0, c50); c51 = TS.Fma(a5, b1, c51);
            a += 6;
            b += bStride;
        }
        TV va = TS.Splat(alpha);
        if (beta == T.Zero)
        {
            TS.Store(c + 0 * ldc, TS.Mul(va, c00)); TS.Store(c + 0 * ldc + w, TS.Mul(va, c01));
            TS.Store(c + 1 * ldc, TS.Mul(va, c10)); TS.Store(c + 1 * ldc + w, TS.Mul(va, c11));
            TS.Store(c + 2 * ldc, TS.Mul(va, c20)); TS.Store(c + 2 * ldc + w, TS.Mul(va, c21));
            TS.Store(c + 3 * ldc, TS.Mul(va, c30)); TS.Store(c + 3 * ldc + w, TS.Mul(va, c31));
            TS.Store(c + 4 * ldc, TS.Mul(va, c40)); TS.Store(c + 4 * ldc + w, TS.Mul(va, c41));
            TS.Store(c + 5 * ldc, TS.Mul(va, c50)); TS.Store(c + 5 * ldc + w, TS.Mul(va, c51));
        }
        else
        {
            TV vb = TS.Splat(beta);
            { T* p = c + 0 * ldc; TS.Store(p, TS.Fma(va, c00, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c01, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 1 * ldc; TS.Store(p, TS.Fma(va, c10, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c11, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 2 * ldc; TS.Store(p, TS.Fma(va, c20, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c21, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 3 * ldc; TS.Store(p, TS.Fma(va, c30, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c31, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 4 * ldc; TS.Store(p, TS.Fma(va, c40, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c41, TS.Mul(vb, TS.Load(p + w)))); }
            { T* p = c + 5 * ldc; TS.Store(p, TS.Fma(va, c50, TS.Mul(vb, TS.Load(p)))); TS.Store(p + w, TS.Fma(va, c51, TS.Mul(vb, TS.Load(p + w)))); }
        }
    }

    /// <summary>8 dot products of length k: sums[r·4 + q] = Σ_k a_r[k]·b_q[k], r &lt; 2; per element exactly the arithmetic of <see cref="Dot4x4{T, TV, TS}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot2x4<T, TV, TS>(int k, T* a0, T* a1, T* b0, T* b1, T* b2, T* b3, T* sums /* [2][4] */)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : unmanaged where TS : ISimd<T, TV>
    {
        int w = TS.Count;
        TV s00 = TS.Zero, s01 = TS.Zero, s02 = TS.Zero, s03 = TS.Zero, s10 = TS.Zero, s11 = TS.Zero, s12 = TS.Zero, s13 = TS.Zero;
        int i = 0;
        for (; i <= k - w; i += w)
        {
            TV va0 = TS.Load(a0 + i), va1 = TS.Load(a1 + i);
            TV vb0 = TS.Load(b0 + i), vb1 = TS.Load(b1 + i), vb2 = TS.Load(b2 + i), vb3 = TS.Load(b3 + i);
            s00 = TS.Fma(va0, vb0, s00); s01 = TS.Fma(va0, vb1, s01); s02 = TS.Fma(va0, vb2, s02); s03 = TS.Fma(va0, vb3, s03);
            s10 = TS.Fma(va1, vb0, s10); s11 = TS.Fma(va1, vb1, s11); s12 = TS.Fma(va1, vb2, s12); s13 = TS.Fma(va1, vb3, s13);
        }
        TS.Sum4(s00, s01, s02, s03, sums); TS.Sum4(s10, s11, s12, s13, sums + 4);
        for (; i < k; i++)
        {
            sums[0] = Mad(a0[i], b0[i], sums[0]); sums[1] = Mad(a0[i], b1[i], sums[1]); sums[2] = Mad(a0[i], b2[i], sums[2]); sums[3] = Mad(a0[i], b3[i], sums[3]);
            sums[4] = Mad(a1[i], b0[i], sums[4]); sums[5] = Mad(a1[i], b1[i], sums[5]); sums[6] = Mad(a1[i], b2[i], sums[6]); sums[7] = Mad(a1[i], b3[i], sums[7]);
        }
    }

    /// <summary>16 dot products of length k: sums[r·4 + q] = Σ_k a_r[k]·b_q[k], vector FMA chains then a fixed-order reduction (<see cref="ISimd{T, TV}.Sum4"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4x4<T, TV, TS>(int k, T* a0, T* a1, T* a2, T* a3, T* b0, T* b1, T* b2, T* b3, T* sums /* [4][4] */)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : unmanaged where TS : ISimd<T, TV>
    {
        int w = TS.Count;
        TV s00 = TS.Zero, s01 = TS.Zero, s02 = TS.Zero, s03 = TS.Zero, s10 = TS.Zero, s11 = TS.Zero, s12 = TS.Zero, s13 = TS.Zero, s20 = TS.Zero, s21 = TS.Zero, s22 = TS.Zero, s23 = TS.Zero, s30 = TS.Zero, s31 = TS.Zero, s32 = TS.Zero, s33 = TS.Zero;
        int i = 0;
        for (; i <= k - w; i += w)
        {
            TV va0 = TS.Load(a0 + i), va1 = TS.Load(a1 + i), va2 = TS.Load(a2 + i), va3 = TS.Load(a3 + i);
            TV vb0 = TS.Load(b0 + i), vb1 = TS.Load(b1 + i), vb2 = TS.Load(b2 + i), vb3 = TS.Load(b3 + i);
            s00 = TS.Fma(va0, vb0, s00); s01 = TS.Fma(va0, vb1, s01); s02 = TS.Fma(va0, vb2, s02); s03 = TS.Fma(va0, vb3, s03);
            s10 = TS.Fma(va1, vb0, s10); s11 = TS.Fma(va1, vb1, s11); s12 = TS.Fma(va1, vb2, s12); s13 = TS.Fma(va1, vb3, s13);
            s20 = TS.Fma(va2, vb0, s20); s21 = TS.Fma(va2, vb1, s21); s22 = TS.Fma(va2, vb2, s22); s23 = TS.Fma(va2, vb3, s23);
            s30 = TS.Fma(va3, vb0, s30); s31 = TS.Fma(va3, vb1, s31); s32 = TS.Fma(va3, vb2, s32); s33 = TS.Fma(va3, vb3, s33);
        }
        TS.Sum4(s00, s01, s02, s03, sums); TS.Sum4(s10, s11, s12, s13, sums + 4);
        TS.Sum4(s20, s21, s22, s23, sums + 8); TS.Sum4(s30, s31, s32, s33, sums + 12);
        for (; i < k; i++)
        {
            sums[0] = Mad(a0[i], b0[i], sums[0]); sums[1] = Mad(a0[i], b1[i], sums[1]); sums[2] = Mad(a0[i], b2[i], sums[2]); sums[3] = Mad(a0[i], b3[i], sums[3]);
            sums[4] = Mad(a1[i], b0[i], sums[4]); sums[5] = Mad(a1[i], b1[i], sums[5]); sums[6] = Mad(a1[i], b2[i], sums[6]); sums[7] = Mad(a1[i], b3[i], sums[7]);
            sums[8] = Mad(a2[i], b0[i], sums[8]); sums[9] = Mad(a2[i], b1[i], sums[9]); sums[10] = Mad(a2[i], b2[i], sums[10]); sums[11] = Mad(a2[i], b3[i], sums[11]);
            sums[12] = Mad(a3[i], b0[i], sums[12]); sums[13] = Mad(a3[i], b1[i], sums[13]); sums[14] = Mad(a3[i], b2[i], sums[14]); sums[15] = Mad(a3[i], b3[i], sums[15]);
        }
    }
}
