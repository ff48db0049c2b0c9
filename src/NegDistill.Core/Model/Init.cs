using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>Seeded initialisers drawn from <see cref="CounterRng"/>, so a parameter's values depend
/// only on (seed, parameter index, element index).</summary>
public static class Init
{
    /// <summary>Normal(0, std) by Box–Muller on two counter-based uniforms.</summary>
    public static float[] Normal(long n, float std, ulong seed)
    {
        var r = new float[n];
        for (long i = 0; i < n; i++)
        {
            double u1 = (CounterRng.Hash(seed, 2 * (ulong)i) >> 11) * (1.0 / (1UL << 53));
            double u2 = (CounterRng.Hash(seed, 2 * (ulong)i + 1) >> 11) * (1.0 / (1UL << 53));
            r[i] = (float)(std * Math.Sqrt(-2.0 * Math.Log(1.0 - u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return r;
    }

    /// <summary>Kaiming-uniform with a = √5, as torch.nn.Linear and PEFT's lora_A use:
    /// bound = gain·√(3/fan_in) with gain = √(2/(1+a²)), i.e. bound = 1/√fan_in.</summary>
    public static float[] KaimingUniform(long n, int fanIn, ulong seed)
    {
        var r = new float[n];
        float bound = 1f / MathF.Sqrt(fanIn);
        for (long i = 0; i < n; i++) r[i] = (2f * CounterRng.Uniform(seed, (ulong)i) - 1f) * bound;
        return r;
    }
}
