namespace NegDistill.Checkpoints.Tests;

public class AdapterCheckpointTests : TempDirTest
{
    private const int Rank = 2;

    // hidden 8, intermediate 12, 2 heads of 4, 1 kv head: q/o 8x8, k/v 8->4, gate/up 8->12, down 12->8.
    private static readonly ModelDims Dims = new(NumLayers: 2, HiddenSize: 8, IntermediateSize: 12, NumAttentionHeads: 2, NumKeyValueHeads: 1);

    private static readonly AdapterConfig Config = new()
    {
        R = Rank,
        LoraAlpha = 4,
        LoraDropout = 0.05,
        TargetModules = ["q_proj", "v_proj", "down_proj"],
        BaseModelNameOrPath = "negdistill/tiny",
    };

    private static StoredTensor Factor(int layer, LinearModule module, LoraMatrix matrix, long rows, long cols, StorageType type = StorageType.F32) =>
        StoredTensor.FromFloat32(HfNames.Lora(layer, module, matrix), [rows, cols], Iota((int)(rows * cols), 0.01f * (layer + 1)), type);

    private static List<StoredTensor> GoodTensors()
    {
        var list = new List<StoredTensor>();
        for (int layer = 0; layer < 2; layer++)
        {
            list.Add(Factor(layer, LinearModule.QProj, LoraMatrix.A, Rank, 8));
            list.Add(Factor(layer, LinearModule.QProj, LoraMatrix.B, 8, Rank));
            list.Add(Factor(layer, LinearModule.VProj, LoraMatrix.A, Rank, 8, StorageType.BF16));
            list.Add(Factor(layer, LinearModule.VProj, LoraMatrix.B, 4, Rank, StorageType.BF16));
            list.Add(Factor(layer, LinearModule.DownProj, LoraMatrix.A, Rank, 12));
            list.Add(Factor(layer, LinearModule.DownProj, LoraMatrix.B, 8, Rank));
        }
        // A non-LoRA unit stored next to the adapter keeps its name.
        list.Add(StoredTensor.FromFloat32(HfNames.PeftModulePath(0, LinearModule.QProj) + ".integration.Q.weight", [4, 4], Iota(16)));
        return list;
    }

    [Test]
    public void SaveThenLoadGivesBackConfigAndTensors()
    {
        string dir = PathIn("adapter");
        var tensors = GoodTensors();
        AdapterCheckpoint.Save(dir, Config, tensors, Dims);

        Assert.That(Directory.GetFiles(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal),
            Is.EqualTo(new[] { AdapterCheckpoint.ConfigFileName, AdapterCheckpoint.WeightsFileName }));
        Assert.That(File.ReadAllText(Path.Combine(dir, AdapterCheckpoint.ConfigFileName)), Is.EqualTo(Config.ToJson()));
        using (var weights = SafeTensors.Open(Path.Combine(dir, AdapterCheckpoint.WeightsFileName)))
        {
            Assert.That(weights.Metadata["format"], Is.EqualTo("pt"));
            Assert.That(weights.Names, Is.EqualTo(tensors.Select(t => t.Name)));
        }

        foreach (var dims in new ModelDims?[] { Dims, null })
        {
            var loaded = AdapterCheckpoint.Load(dir, dims);
            Assert.That(loaded.Config, Is.EqualTo(Config));
            Assert.That(loaded.Tensors.Select(t => t.Name), Is.EqualTo(tensors.Select(t => t.Name)));
            foreach (var t in tensors)
            {
                Assert.That(loaded[t.Name].Type, Is.EqualTo(t.Type));
                Assert.That(loaded[t.Name].Shape, Is.EqualTo(t.Shape));
                Assert.That(loaded[t.Name].Data, Is.EqualTo(t.Data), t.Name);
            }
            Assert.That(loaded.Contains("base_model.model.model.layers.0.self_attn.q_proj.integration.Q.weight"));
            Assert.That(loaded.Lora(1, LinearModule.VProj, LoraMatrix.B)!.Shape, Is.EqualTo(new long[] { 4, Rank }));
            Assert.That(loaded.Lora(1, LinearModule.KProj, LoraMatrix.A), Is.Null);
        }
    }

    private void SaveFails(List<StoredTensor> tensors, ModelDims? dims, CheckpointErrorKind kind, string tensor, params string[] reasons)
    {
        string dir = PathIn("rejected");
        var ex = Assert.Throws<CheckpointFormatException>(() => AdapterCheckpoint.Save(dir, Config, tensors, dims))!;
        Assert.That(ex.Kind, Is.EqualTo(kind), ex.Message);
        Assert.That(ex.TensorName, Is.EqualTo(tensor));
        Assert.That(ex.Message, Does.Contain($"'{tensor}'"));
        Assert.That(ex.Message, Does.Contain(Path.Combine(dir, AdapterCheckpoint.WeightsFileName)));
        foreach (string r in reasons) Assert.That(ex.Message, Does.Contain(r));
        Assert.That(Directory.Exists(dir), Is.False, "nothing is written when validation fails");
    }

    private static List<StoredTensor> Replace(StoredTensor replacement)
    {
        var list = GoodTensors();
        int i = list.FindIndex(t => t.Name == replacement.Name);
        list[i] = replacement;
        return list;
    }

    [Test]
    public void LoraAWithTheWrongRankIsNamed()
    {
        var bad = Factor(1, LinearModule.QProj, LoraMatrix.A, 3, 8);
        SaveFails(Replace(bad), null, CheckpointErrorKind.AdapterMismatch, bad.Name, "r=2", "[3, 8]");
    }

    [Test]
    public void LoraBWithTheWrongRankIsNamed()
    {
        var bad = Factor(0, LinearModule.DownProj, LoraMatrix.B, 8, 4);
        SaveFails(Replace(bad), Dims, CheckpointErrorKind.AdapterMismatch, bad.Name, "(out_features, r=2)");
    }

    [Test]
    public void LoraBWithTheWrongOutFeaturesForItsModuleIsNamed()
    {
        // v_proj writes num_kv_heads * head_dim = 4 features, not the hidden size.
        var bad = Factor(0, LinearModule.VProj, LoraMatrix.B, 8, Rank);
        SaveFails(Replace(bad), Dims, CheckpointErrorKind.AdapterMismatch, bad.Name, "v_proj", "out_features=4", "(4, 2)");
    }

    [Test]
    public void LoraAWithTheWrongInFeaturesForItsModuleIsNamed()
    {
        // down_proj reads the intermediate size.
        var bad = Factor(1, LinearModule.DownProj, LoraMatrix.A, Rank, 8);
        SaveFails(Replace(bad), Dims, CheckpointErrorKind.AdapterMismatch, bad.Name, "in_features=12");
    }

    [Test]
    public void WithoutDimsInconsistentLayersAreNamed()
    {
        var bad = Factor(1, LinearModule.QProj, LoraMatrix.A, Rank, 6);
        SaveFails(Replace(bad), null, CheckpointErrorKind.AdapterMismatch, bad.Name, "in_features=6", "in_features=8", HfNames.Lora(0, LinearModule.QProj, LoraMatrix.A));
    }

    [Test]
    public void WithoutDimsAFactorDisagreeingWithTheHiddenSizeIsNamed()
    {
        // Layer 0's down_proj B is the first to say what down_proj writes; it must be the hidden size 8 read by q_proj.
        var bad = Factor(0, LinearModule.DownProj, LoraMatrix.B, 6, Rank);
        SaveFails(Replace(bad), null, CheckpointErrorKind.AdapterMismatch, bad.Name, "hidden size 8");
    }

    [Test]
    public void LayerBeyondTheModelIsNamed()
    {
        var list = GoodTensors();
        list.Add(Factor(2, LinearModule.QProj, LoraMatrix.A, Rank, 8));
        list.Add(Factor(2, LinearModule.QProj, LoraMatrix.B, 8, Rank));
        SaveFails(list, Dims, CheckpointErrorKind.AdapterMismatch, HfNames.Lora(2, LinearModule.QProj, LoraMatrix.A), "layer 2", "2 layers");
    }

    [Test]
    public void FactorWithoutItsPartnerIsNamed()
    {
        var list = GoodTensors();
        list.RemoveAll(t => t.Name == HfNames.Lora(1, LinearModule.VProj, LoraMatrix.B));
        SaveFails(list, Dims, CheckpointErrorKind.AdapterMismatch, HfNames.Lora(1, LinearModule.VProj, LoraMatrix.A), "no partner", HfNames.Lora(1, LinearModule.VProj, LoraMatrix.B));
    }

    [Test]
    public void FactorForAModuleOutsideTargetModulesIsNamed()
    {
        var list = GoodTensors();
        list.Add(Factor(0, LinearModule.GateProj, LoraMatrix.A, Rank, 8));
        list.Add(Factor(0, LinearModule.GateProj, LoraMatrix.B, 12, Rank));
        SaveFails(list, Dims, CheckpointErrorKind.AdapterMismatch, HfNames.Lora(0, LinearModule.GateProj, LoraMatrix.A), "gate_proj", "not in target_modules");
    }

    [Test]
    public void ThreeDimensionalFactorIsNamed()
    {
        var bad = StoredTensor.FromFloat32(HfNames.Lora(0, LinearModule.QProj, LoraMatrix.A), [Rank, 8, 1], Iota(16));
        SaveFails(Replace(bad), null, CheckpointErrorKind.AdapterMismatch, bad.Name, "2-D");
    }

    [Test]
    public void MalformedLoraNameIsNamed()
    {
        var list = GoodTensors();
        string name = "base_model.model.model.layers.0.mlp.q_proj.lora_A.weight";
        list.Add(StoredTensor.FromFloat32(name, [Rank, 8], Iota(16)));
        SaveFails(list, null, CheckpointErrorKind.InvalidName, name, "belongs under 'self_attn'");
    }

    [Test]
    public void LoadRejectsAFileWrittenWithAMismatchedShape()
    {
        string dir = PathIn("foreign");
        Directory.CreateDirectory(dir);
        Config.Save(Path.Combine(dir, AdapterCheckpoint.ConfigFileName));
        var tensors = Replace(Factor(0, LinearModule.QProj, LoraMatrix.B, 8, 5));
        string weights = Path.Combine(dir, AdapterCheckpoint.WeightsFileName);
        SafeTensors.Write(weights, tensors);

        var ex = Assert.Throws<CheckpointFormatException>(() => AdapterCheckpoint.Load(dir))!;
        Assert.That(ex.Kind, Is.EqualTo(CheckpointErrorKind.AdapterMismatch));
        Assert.That(ex.FilePath, Is.EqualTo(weights));
        Assert.That(ex.TensorName, Is.EqualTo(HfNames.Lora(0, LinearModule.QProj, LoraMatrix.B)));
        Assert.That(ex.Message, Does.Contain("[8, 5]"));
    }

    [Test]
    public void LoadWithoutConfigFailsNamingIt()
    {
        string dir = PathIn("noconfig");
        Directory.CreateDirectory(dir);
        SafeTensors.Write(Path.Combine(dir, AdapterCheckpoint.WeightsFileName), GoodTensors());
        var ex = Assert.Throws<CheckpointFormatException>(() => AdapterCheckpoint.Load(dir))!;
        Assert.That(ex.Kind, Is.EqualTo(CheckpointErrorKind.MissingFile));
        Assert.That(ex.FilePath, Is.EqualTo(Path.Combine(dir, AdapterCheckpoint.ConfigFileName)));
    }

    [Test]
    public void ResavingReplacesBothFiles()
    {
        string dir = PathIn("again");
        AdapterCheckpoint.Save(dir, Config, GoodTensors(), Dims);
        var smaller = GoodTensors().Where(t => !t.Name.Contains("down_proj")).ToList();
        var config = Config with { TargetModules = ["q_proj", "v_proj"], LoraAlpha = 8 };
        AdapterCheckpoint.Save(dir, config, smaller, Dims);
        var loaded = AdapterCheckpoint.Load(dir, Dims);
        Assert.That(loaded.Config, Is.EqualTo(config));
        Assert.That(loaded.Tensors, Has.Count.EqualTo(smaller.Count));
        Assert.That(Directory.GetFiles(dir), Has.Length.EqualTo(2));
    }
}
