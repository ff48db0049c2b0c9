// ─────────────────────────────────────────────────────────────────────────────
// Float vectors of one width for the CPU twin's element-wise and row ops (softmax rows,
// SwiGLU), written once against IVecF and specialised by the JIT for 512, 256 and 128 bits,
// so that the AVX2 and SSE paths run as the AVX-512 one does instead of falling back to the
// library's generic span primitives (which start in the JIT's unoptimised tier).
//
// exp is a polynomial of our own (Cephes' expf coefficients): x = k·ln2 + f with
// k = round(x·log₂e), e^f by a degree-7 polynomial, times 2^k. It computes the same bits at
// every width (lanes never mix, the same operations per lane) and, on [−87.3, 0], the bits of
// the AVX-512-only softmax exp it replaced (all 1.1·10⁹ floats there compared); within 1.25 ulp
// of e^x on [−87.3, 88.7] (ElementwiseOpsTests). Where FMA is no instruction (x86 with
// DOTNET_EnableAVX2=0) an FMA is a multiply and an add: those bits differ from an FMA
// machine's, within 1.26 ulp.
// ─────────────────────────────────────────────────────────────────────────────
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace NegDistill.Cpu;

/// <summary>Float vector operations of one width (see the file header).</summary>
internal unsafe interface IVecF<TV> where TV : unmanaged
{
    static abstract int Count { get; }
    static abstract TV Load(float* p);
    static abstract void Store(float* p, TV v);
    static abstract TV Splat(float x);
    static abstract TV Add(TV a, TV b);
    static abstract TV Sub(TV a, TV b);
    static abstract TV Mul(TV a, TV b);
    static abstract TV Div(TV a, TV b);
    /// <summary>a·b + c, one rounding where FMA is an instruction.</summary>
    static abstract TV Fma(TV a, TV b, TV c);
    /// <summary>The machine's max/min (maxps/minps): when a lane of either is NaN the lane of <c>b</c> is returned.</summary>
    static abstract TV Max(TV a, TV b);
    static abstract TV Min(TV a, TV b);
    /// <summary>Round to nearest, ties to even.</summary>
    static abstract TV Round(TV a);
    /// <summary>p·2^k for integral k in [−150, 130]: p·2^⌊k/2⌋ (exact for |p| in [0.5, 2]), times 2^(k−⌊k/2⌋) (one rounding).</summary>
    static abstract TV Scale(TV p, TV k);
    /// <summary>Lanes where x &lt; bound take <paramref name="ifLess"/>, the others <paramref name="otherwise"/>.</summary>
    static abstract TV SelectLess(TV x, float bound, TV ifLess, TV otherwise);
    /// <summary>Horizontal sum (the library's fixed lane order for this width).</summary>
    static abstract float Sum(TV v);
    /// <summary>Horizontal max (MathF.Max lane by lane, so a NaN lane gives NaN).</summary>
    static abstract float MaxAcross(TV v);
}

internal readonly unsafe struct V512 : IVecF<Vector512<float>>
{
    public static int Count => 16;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load(float* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector512<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Splat(float x) => Vector512.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Sub(Vector512<float> a, Vector512<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Mul(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Div(Vector512<float> a, Vector512<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Vector512.MaxNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Min(Vector512<float> a, Vector512<float> b) => Vector512.MinNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Round(Vector512<float> a) => Vector512.Round(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Scale(Vector512<float> p, Vector512<float> k)
    {
        var ki = Vector512.ConvertToInt32(k);
        var k1 = Vector512.ShiftRightArithmetic(ki, 1);
        var s1 = Vector512.ShiftLeft(k1 + Vector512.Create(127), 23).AsSingle();
        var s2 = Vector512.ShiftLeft(ki - k1 + Vector512.Create(127), 23).AsSingle();
        return p * s1 * s2;
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> SelectLess(Vector512<float> x, float bound, Vector512<float> ifLess, Vector512<float> otherwise)
        => Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(bound)), ifLess, otherwise);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector512<float> v) => Vector512.Sum(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector512<float> v)
    {
        float m = v.ToScalar();
        for (int j = 1; j < 16; j++) m = MathF.Max(m, v.GetElement(j));
        return m;
    }
}

internal readonly unsafe struct V256 : IVecF<Vector256<float>>
{
    public static int Count => 8;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load(float* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector256<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Splat(float x) => Vector256.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Sub(Vector256<float> a, Vector256<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Mul(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Div(Vector256<float> a, Vector256<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c)
        => System.Runtime.Intrinsics.X86.Fma.IsSupported ? Vector256.FusedMultiplyAdd(a, b, c) : a * b + c;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Vector256.MaxNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Min(Vector256<float> a, Vector256<float> b) => Vector256.MinNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Round(Vector256<float> a) => Vector256.Round(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Scale(Vector256<float> p, Vector256<float> k)
    {
        var ki = Vector256.ConvertToInt32(k);
        var k1 = Vector256.ShiftRightArithmetic(ki, 1);
        var s1 = Vector256.ShiftLeft(k1 + Vector256.Create(127), 23).AsSingle();
        var s2 = Vector256.ShiftLeft(ki - k1 + Vector256.Create(127), 23).AsSingle();
        return p * s1 * s2;
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> SelectLess(Vector256<float> x, float bound, Vector256<float> ifLess, Vector256<float> otherwise)
        => Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(bound)), ifLess, otherwise);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector256<float> v) => Vector256.Sum(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector256<float> v)
    {
        float m = v.ToScalar();
        for (int j = 1; j < 8; j++) m = MathF.Max(m, v.GetElement(j));
        return m;
    }
}

internal readonly unsafe struct V128 : IVecF<Vector128<float>>
{
    public static int Count => 4;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Load(float* p) => Vector128.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector128<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Splat(float x) => Vector128.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Sub(Vector128<float> a, Vector128<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Mul(Vector128<float> a, Vector128<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Div(Vector128<float> a, Vector128<float> b) => a / b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Fma(Vector128<float> a, Vector128<float> b, Vector128<float> c)
        => System.Runtime.Intrinsics.X86.Fma.IsSupported || AdvSimd.IsSupported ? Vector128.FusedMultiplyAdd(a, b, c) : a * b + c;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Vector128.MaxNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Min(Vector128<float> a, Vector128<float> b) => Vector128.MinNative(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Round(Vector128<float> a) => Vector128.Round(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Scale(Vector128<float> p, Vector128<float> k)
    {
        var ki = Vector128.ConvertToInt32(k);
        var k1 = Vector128.ShiftRightArithmetic(ki, 1);
        var s1 = Vector128.ShiftLeft(k1 + Vector128.Create(127), 23).AsSingle();
        var s2 = Vector128.ShiftLeft(ki - k1 + Vector128.Create(127), 23).AsSingle();
        return p * s1 * s2;
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> SelectLess(Vector128<float> x, float bound, Vector128<float> ifLess, Vector128<float> otherwise)
        => Vector128.ConditionalSelect(Vector128.LessThan(x, Vector128.Create(bound)), ifLess, otherwise);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector128<float> v) => Vector128.Sum(v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector128<float> v)
    {
        float m = v.ToScalar();
        for (int j = 1; j < 4; j++) m = MathF.Max(m, v.GetElement(j));
        return m;
    }
}

/// <summary>Math on <see cref="IVecF{TV}"/> vectors.</summary>
internal static class VecMath
{
    /// <summary>e^x per lane (see the file header); 0 (or a subnormal) below about −87.3, +∞ above about 88.72, NaN for NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Exp<TV, TS>(TV x) where TV : unmanaged where TS : IVecF<TV>
    {
        x = TS.Min(TS.Splat(89f), TS.Max(TS.Splat(-104f), x));           // x second: a NaN lane stays NaN
        var k = TS.Round(TS.Mul(x, TS.Splat(1.44269504088896341f)));
        var f = TS.Fma(k, TS.Splat(-0.693359375f), x);      // ln2 in two parts
        f = TS.Fma(k, TS.Splat(2.12194440e-4f), f);
        var p = TS.Splat(1.9875691500e-4f);
        p = TS.Fma(p, f, TS.Splat(1.3981999507e-3f));
        p = TS.Fma(p, f, TS.Splat(8.3334519073e-3f));
        p = TS.Fma(p, f, TS.Splat(4.1665795894e-2f));
        p = TS.Fma(p, f, TS.Splat(1.6666665459e-1f));
        p = TS.Fma(p, f, TS.Splat(5.0000001201e-1f));
        p = TS.Fma(p, TS.Mul(f, f), TS.Add(f, TS.Splat(1f)));
        return TS.Scale(p, k);
    }

    /// <summary>e^x for the softmax (x ≤ 0): as <see cref="Exp{TV, TS}"/>, and exactly 0 below −87.3 (where e^x leaves the normal floats) and for −∞.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV ExpNeg<TV, TS>(TV x) where TV : unmanaged where TS : IVecF<TV>
        => TS.SelectLess(x, -87.3f, TS.Splat(0f), Exp<TV, TS>(x));

    /// <summary>σ(x) = 1 / (1 + e^−x) per lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TV Sigmoid<TV, TS>(TV x) where TV : unmanaged where TS : IVecF<TV>
    {
        var one = TS.Splat(1f);
        return TS.Div(one, TS.Add(one, Exp<TV, TS>(TS.Sub(TS.Splat(0f), x))));
    }
}
