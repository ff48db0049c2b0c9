namespace NegDistill.Checkpoints.Tests;

/// <summary>Gives each test its own empty folder under the system temp folder, removed afterwards.</summary>
public abstract class TempDirTest
{
    protected string Dir { get; private set; } = "";

    [SetUp]
    public void CreateTempDir()
    {
        Dir = Path.Combine(Path.GetTempPath(), "negdistill-ckpt-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Dir);
    }

    [TearDown]
    public void RemoveTempDir()
    {
        if (Directory.Exists(Dir)) Directory.Delete(Dir, recursive: true);
    }

    protected string PathIn(string name) => Path.Combine(Dir, name);

    protected static float[] Iota(int n, float scale = 1f)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (i - n / 2) * scale;
        return a;
    }

    protected static int[] Bits(float[] values) => values.Select(BitConverter.SingleToInt32Bits).ToArray();
}
