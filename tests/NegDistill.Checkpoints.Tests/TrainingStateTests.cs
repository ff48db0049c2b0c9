namespace NegDistill.Checkpoints.Tests;

public class TrainingStateTests : TempDirTest
{
    private static float[] AwkwardFloats(int n, int seed)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32));
        float[] specials = [-0f, float.Epsilon, -1e-40f, float.PositiveInfinity, float.NegativeInfinity,
            BitConverter.UInt32BitsToSingle(0x7F800001u), BitConverter.UInt32BitsToSingle(0xFFBADBADu), float.MaxValue];
        specials.CopyTo(a, 0);
        return a;
    }

    private static TrainingState Sample()
    {
        var state = new TrainingState
        {
            Step = 123_456_789_012,
            Epoch = 3,
            DataCursor = 987_654,
            RngState = "xoshiro256**:0123456789abcdef:fedcba9876543210:deadbeef:cafebabe",
        };
        state.Values["lr_scheduler.last_lr"] = "0.00029999999999999997";
        state.Values["loss_scale"] = "65536";
        state.Values["note with spaces/and:symbols"] = "ünïcødé";
        state.Moments[HfNames.Lora(0, LinearModule.QProj, LoraMatrix.A)] = new OptimizerMoments([4, 8], AwkwardFloats(32, 1), AwkwardFloats(32, 2));
        state.Moments[HfNames.Lora(0, LinearModule.QProj, LoraMatrix.B)] = new OptimizerMoments([8, 4], AwkwardFloats(32, 3), AwkwardFloats(32, 4));
        state.Moments["scalar.bias"] = new OptimizerMoments([], [1.5f], [0f]);
        return state;
    }

    [Test]
    public void RoundTripIsBitIdentical()
    {
        string path = PathIn("trainer_state.safetensors");
        var state = Sample();
        state.Save(path);
        var back = TrainingState.Load(path);

        Assert.That(back.Step, Is.EqualTo(state.Step));
        Assert.That(back.Epoch, Is.EqualTo(state.Epoch));
        Assert.That(back.DataCursor, Is.EqualTo(state.DataCursor));
        Assert.That(back.RngState, Is.EqualTo(state.RngState));
        Assert.That(back.Values, Is.EquivalentTo(state.Values));
        Assert.That(back.Moments.Keys, Is.EquivalentTo(state.Moments.Keys));
        foreach (var (param, m) in state.Moments)
        {
            Assert.That(back.Moments[param].Shape, Is.EqualTo(m.Shape), param);
            Assert.That(Bits(back.Moments[param].M), Is.EqualTo(Bits(m.M)), param);
            Assert.That(Bits(back.Moments[param].V), Is.EqualTo(Bits(m.V)), param);
        }
    }

    [Test]
    public void FileIsPlainSafetensorsWithNamedF32Moments()
    {
        string path = PathIn("state.safetensors");
        Sample().Save(path);
        using var file = SafeTensors.Open(path);
        string param = HfNames.Lora(0, LinearModule.QProj, LoraMatrix.B);
        Assert.That(file.Names, Does.Contain("optim.m." + param).And.Contain("optim.v." + param).And.Contain("optim.v.scalar.bias"));
        Assert.That(file.Names, Has.Count.EqualTo(6));
        Assert.That(file.Infos.All(i => i.Type == StorageType.F32));
        Assert.That(file.Metadata["step"], Is.EqualTo("123456789012"));
        Assert.That(file.Metadata["epoch"], Is.EqualTo("3"));
        Assert.That(file.Metadata["data_cursor"], Is.EqualTo("987654"));
        Assert.That(file.Metadata["value.loss_scale"], Is.EqualTo("65536"));
    }

    [Test]
    public void SavingAgainReplacesTheStateAtomically()
    {
        string path = PathIn("state.safetensors");
        Sample().Save(path);
        var next = new TrainingState { Step = 1, RngState = "r" };
        next.Save(path);
        var back = TrainingState.Load(path);
        Assert.That(back.Step, Is.EqualTo(1));
        Assert.That(back.Moments, Is.Empty);
        Assert.That(back.Values, Is.Empty);
        Assert.That(Directory.GetFiles(Dir), Has.Length.EqualTo(1));
    }

    [Test]
    public void MomentWithoutItsPartnerIsNamed()
    {
        string path = PathIn("half.safetensors");
        SafeTensors.Write(path, [StoredTensor.FromFloat32("optim.m.w", [2], [1f, 2f])], Meta());
        var ex = Assert.Throws<CheckpointFormatException>(() => TrainingState.Load(path))!;
        Assert.That(ex.Kind, Is.EqualTo(CheckpointErrorKind.InvalidTrainingState));
        Assert.That(ex.TensorName, Is.EqualTo("optim.m.w"));
        Assert.That(ex.Message, Does.Contain(path).And.Contain("optim.v.w"));
    }

    [Test]
    public void MomentsWithDifferentShapesAreNamed()
    {
        string path = PathIn("shapes.safetensors");
        SafeTensors.Write(path, [StoredTensor.FromFloat32("optim.m.w", [2], [1f, 2f]), StoredTensor.FromFloat32("optim.v.w", [1, 2], [1f, 2f])], Meta());
        var ex = Assert.Throws<CheckpointFormatException>(() => TrainingState.Load(path))!;
        Assert.That(ex.Kind, Is.EqualTo(CheckpointErrorKind.InvalidTrainingState));
        Assert.That(ex.TensorName, Is.EqualTo("optim.v.w"));
    }

    [Test]
    public void MomentsStoredInHalfPrecisionAreRejected()
    {
        string path = PathIn("bf16.safetensors");
        SafeTensors.Write(path, [StoredTensor.FromFloat32("optim.m.w", [1], [1f], StorageType.BF16), StoredTensor.FromFloat32("optim.v.w", [1], [1f])], Meta());
        var ex = Assert.Throws<CheckpointFormatException>(() => TrainingState.Load(path))!;
        Assert.That(ex.TensorName, Is.EqualTo("optim.m.w"));
        Assert.That(ex.Message, Does.Contain("BF16"));
    }

    [Test]
    public void UnexpectedTensorIsNamed()
    {
        string path = PathIn("extra.safetensors");
        SafeTensors.Write(path, [StoredTensor.FromFloat32("model.norm.weight", [1], [1f])], Meta());
        var ex = Assert.Throws<CheckpointFormatException>(() => TrainingState.Load(path))!;
        Assert.That(ex.TensorName, Is.EqualTo("model.norm.weight"));
    }

    [TestCase("format", "something-else", "\"format\"")]
    [TestCase("format_version", "2", "\"format_version\"")]
    [TestCase("step", "12x", "\"step\"")]
    public void BadMetadataIsRejectedNamingTheKey(string key, string value, string mention)
    {
        string path = PathIn("meta.safetensors");
        var meta = Meta();
        meta[key] = value;
        SafeTensors.Write(path, [], meta);
        var ex = Assert.Throws<CheckpointFormatException>(() => TrainingState.Load(path))!;
        Assert.That(ex.Kind, Is.EqualTo(CheckpointErrorKind.InvalidTrainingState));
        Assert.That(ex.Message, Does.Contain(path).And.Contain(mention));
    }

    [Test]
    public void MomentsMustMatchTheirShape()
    {
        Assert.Throws<ArgumentException>(() => new OptimizerMoments([2, 2], new float[4], new float[3]));
    }

    private static Dictionary<string, string> Meta() => new()
    {
        ["format"] = TrainingState.FormatName,
        ["format_version"] = TrainingState.FormatVersion,
        ["step"] = "1",
        ["epoch"] = "0",
        ["data_cursor"] = "0",
        ["rng_state"] = "",
    };
}
