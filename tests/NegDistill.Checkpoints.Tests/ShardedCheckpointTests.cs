namespace NegDistill.Checkpoints.Tests;

public class ShardedCheckpointTests : TempDirTest
{
    private static List<StoredTensor> FiveTensors() =>
    [
        StoredTensor.FromFloat32(HfNames.EmbedTokens, [2, 2], Iota(4)),                                  // 16 bytes
        StoredTensor.FromFloat32(HfNames.Linear(0, LinearModule.QProj), [2, 2], Iota(4, 2f)),            // 16 bytes
        StoredTensor.FromFloat32(HfNames.Linear(0, LinearModule.DownProj), [2, 4], Iota(8, 3f)),         // 32 bytes
        StoredTensor.FromFloat32(HfNames.FinalNorm, [2], [1f, 1f]),                                      // 8 bytes
        StoredTensor.FromFloat32(HfNames.LmHead, [1], [5f]),                                             // 4 bytes
    ];

    [Test]
    public void ShardsAndIndexAreWrittenAsHuggingFaceWritesThem()
    {
        var written = ShardedCheckpoint.Write(Dir, FiveTensors(), maxShardBytes: 32);

        Assert.That(written, Is.EqualTo(new[]
        {
            "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json",
        }));
        Assert.That(Directory.GetFiles(Dir).Select(Path.GetFileName).Order(StringComparer.Ordinal), Is.EqualTo(written.Order(StringComparer.Ordinal)));

        // json.dumps(index, indent=2, sort_keys=True) + "\n"
        string expected =
            "{\n" +
            "  \"metadata\": {\n" +
            "    \"total_size\": 76\n" +
            "  },\n" +
            "  \"weight_map\": {\n" +
            "    \"lm_head.weight\": \"model-00003-of-00003.safetensors\",\n" +
            "    \"model.embed_tokens.weight\": \"model-00001-of-00003.safetensors\",\n" +
            "    \"model.layers.0.mlp.down_proj.weight\": \"model-00002-of-00003.safetensors\",\n" +
            "    \"model.layers.0.self_attn.q_proj.weight\": \"model-00001-of-00003.safetensors\",\n" +
            "    \"model.norm.weight\": \"model-00003-of-00003.safetensors\"\n" +
            "  }\n" +
            "}\n";
        Assert.That(File.ReadAllText(PathIn(ShardedCheckpoint.IndexFileName)), Is.EqualTo(expected));

        using (var shard = SafeTensors.Open(PathIn("model-00001-of-00003.safetensors")))
        {
            Assert.That(shard.Names, Is.EqualTo(new[] { HfNames.EmbedTokens, HfNames.Linear(0, LinearModule.QProj) }));
            Assert.That(shard.Metadata["format"], Is.EqualTo("pt"));
        }

        using var reader = ShardedCheckpoint.Open(Dir);
        Assert.That(reader.IsSharded);
        Assert.That(reader.Metadata["total_size"], Is.EqualTo("76"));
        Assert.That(reader.Names, Is.EquivalentTo(FiveTensors().Select(t => t.Name)));
        foreach (var t in FiveTensors())
        {
            Assert.That(reader.Read(t.Name).Data, Is.EqualTo(t.Data), t.Name);
            Assert.That(reader.ReadFloat32(t.Name), Is.EqualTo(t.ToFloat32()), t.Name);
        }
        Assert.That(Path.GetFileName(reader.FileOf(HfNames.LmHead)), Is.EqualTo("model-00003-of-00003.safetensors"));
        Assert.That(reader.Info(HfNames.Linear(0, LinearModule.DownProj)).Shape, Is.EqualTo(new long[] { 2, 4 }));
    }

    [Test]
    public void TensorLargerThanTheLimitGetsAShardOfItsOwn()
    {
        var tensors = new List<StoredTensor>
        {
            StoredTensor.FromFloat32("small1", [2], [1f, 2f]),   // 8
            StoredTensor.FromFloat32("huge", [10], Iota(10)),    // 40 > 16
            StoredTensor.FromFloat32("small2", [2], [3f, 4f]),   // 8
            StoredTensor.FromFloat32("small3", [2], [5f, 6f]),   // 8
        };
        ShardedCheckpoint.Write(Dir, tensors, maxShardBytes: 16);
        using var reader = ShardedCheckpoint.Open(Dir);
        // As huggingface_hub splits: the oversized tensor is appended as a shard at once, while the shard being
        // filled is appended only when the next tensor would overflow it.
        Assert.That(Path.GetFileName(reader.FileOf("huge")), Is.EqualTo("model-00001-of-00003.safetensors"));
        Assert.That(Path.GetFileName(reader.FileOf("small1")), Is.EqualTo("model-00002-of-00003.safetensors"));
        Assert.That(Path.GetFileName(reader.FileOf("small2")), Is.EqualTo("model-00002-of-00003.safetensors"));
        Assert.That(Path.GetFileName(reader.FileOf("small3")), Is.EqualTo("model-00003-of-00003.safetensors"));
        using (var shard = SafeTensors.Open(reader.FileOf("huge"))) Assert.That(shard.Names, Is.EqualTo(new[] { "huge" }));
        Assert.That(reader.ReadFloat32("huge"), Is.EqualTo(Iota(10)));
    }

    [Test]
    public void OneShardIsWrittenAsModelSafetensorsWithoutAnIndex()
    {
        var written = ShardedCheckpoint.Write(Dir, FiveTensors(), maxShardBytes: 1 << 20, new Dictionary<string, string> { ["origin"] = "test" });
        Assert.That(written, Is.EqualTo(new[] { ShardedCheckpoint.SingleFileName }));
        Assert.That(File.Exists(PathIn(ShardedCheckpoint.IndexFileName)), Is.False);

        using var reader = ShardedCheckpoint.Open(Dir);
        Assert.That(reader.IsSharded, Is.False);
        Assert.That(reader.Names, Is.EqualTo(FiveTensors().Select(t => t.Name)));
        Assert.That(reader.Metadata["origin"], Is.EqualTo("test"));
        Assert.That(reader.Metadata["format"], Is.EqualTo("pt"));
        Assert.That(reader.ReadFloat32(HfNames.FinalNorm), Is.EqualTo(new[] { 1f, 1f }));
    }

    [Test]
    public void SwitchingLayoutRemovesTheOldFiles()
    {
        ShardedCheckpoint.Write(Dir, FiveTensors(), maxShardBytes: 32);
        File.WriteAllText(PathIn("config.json"), "{}"); // unrelated files are left alone
        ShardedCheckpoint.Write(Dir, FiveTensors(), maxShardBytes: 1 << 20);
        Assert.That(Directory.GetFiles(Dir).Select(Path.GetFileName).Order(StringComparer.Ordinal),
            Is.EqualTo(new[] { "config.json", ShardedCheckpoint.SingleFileName }));

        ShardedCheckpoint.Write(Dir, FiveTensors(), maxShardBytes: 48);
        Assert.That(Directory.GetFiles(Dir).Select(Path.GetFileName).Order(StringComparer.Ordinal),
            Is.EqualTo(new[] { "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", ShardedCheckpoint.IndexFileName }));
        using var reader = ShardedCheckpoint.Open(Dir);
        Assert.That(reader.IsSharded);
        Assert.That(reader.ReadFloat32(HfNames.LmHead), Is.EqualTo(new[] { 5f }));
    }

    [Test]
    public void MissingShardFailsNamingTheShardAndATensor()
    {
        ShardedCheckpoint.Write(Dir, FiveTensors(), maxShardBytes: 32);
        string shard = PathIn("model-00002-of-00003.safetensors");
        File.Delete(shard);
        var ex = Assert.Throws<CheckpointFormatException>(() => ShardedCheckpoint.Open(Dir))!;
        Assert.That(ex.Kind, Is.EqualTo(CheckpointErrorKind.MissingFile));
        Assert.That(ex.FilePath, Is.EqualTo(shard));
        Assert.That(ex.Message, Does.Contain(shard).And.Contain("missing").And.Contain(ShardedCheckpoint.IndexFileName));
        Assert.That(ex.TensorName, Is.EqualTo(HfNames.Linear(0, LinearModule.DownProj)));
    }

    [Test]
    public void IndexEntryWhoseShardLacksTheTensorFails()
    {
        ShardedCheckpoint.Write(Dir, FiveTensors(), maxShardBytes: 32);
        string indexPath = PathIn(ShardedCheckpoint.IndexFileName);
        string index = File.ReadAllText(indexPath).Replace(
            "\"lm_head.weight\"", "\"ghost.weight\": \"model-00001-of-00003.safetensors\",\n    \"lm_head.weight\"");
        File.WriteAllText(indexPath, index);
        var ex = Assert.Throws<CheckpointFormatException>(() => ShardedCheckpoint.Open(Dir))!;
        Assert.That(ex.Kind, Is.EqualTo(CheckpointErrorKind.MissingTensor));
        Assert.That(ex.TensorName, Is.EqualTo("ghost.weight"));
        Assert.That(ex.FilePath, Is.EqualTo(PathIn("model-00001-of-00003.safetensors")));
        Assert.That(ex.Message, Does.Contain("'ghost.weight'").And.Contain("model-00001-of-00003.safetensors"));
    }

    [Test]
    public void AskingTheReaderForAnUnknownTensorFails()
    {
        ShardedCheckpoint.Write(Dir, FiveTensors(), maxShardBytes: 32);
        using var reader = ShardedCheckpoint.Open(Dir);
        var ex = Assert.Throws<CheckpointFormatException>(() => reader.Read("nope"))!;
        Assert.That(ex.Kind, Is.EqualTo(CheckpointErrorKind.MissingTensor));
        Assert.That(ex.Message, Does.Contain("'nope'").And.Contain(ShardedCheckpoint.IndexFileName));
    }

    [Test]
    public void FolderWithoutACheckpointFails()
    {
        var ex = Assert.Throws<CheckpointFormatException>(() => ShardedCheckpoint.Open(Dir))!;
        Assert.That(ex.Kind, Is.EqualTo(CheckpointErrorKind.MissingFile));
        Assert.That(ex.Message, Does.Contain(Dir).And.Contain(ShardedCheckpoint.IndexFileName));
    }

    [TestCase("{\"weight_map\": {\"w\": \"../elsewhere.safetensors\"}}", CheckpointErrorKind.InvalidIndex, "w", TestName = "Index entry escaping the folder")]
    [TestCase("{\"weight_map\": {\"w\": 3}}", CheckpointErrorKind.InvalidIndex, "w", TestName = "Index entry that is not a string")]
    [TestCase("{\"metadata\": {}}", CheckpointErrorKind.InvalidIndex, null, TestName = "Index without weight_map")]
    [TestCase("{\"weight_map\": {", CheckpointErrorKind.InvalidJson, null, TestName = "Index that is not JSON")]
    public void MalformedIndexFails(string indexJson, CheckpointErrorKind kind, string? tensor)
    {
        string indexPath = PathIn(ShardedCheckpoint.IndexFileName);
        File.WriteAllText(indexPath, indexJson);
        var ex = Assert.Throws<CheckpointFormatException>(() => ShardedCheckpoint.Open(Dir))!;
        Assert.That(ex.Kind, Is.EqualTo(kind));
        Assert.That(ex.FilePath, Is.EqualTo(indexPath));
        Assert.That(ex.TensorName, Is.EqualTo(tensor));
    }

    [Test]
    public void WriteRejectsBadArguments()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ShardedCheckpoint.Write(Dir, FiveTensors(), 0));
        var t = StoredTensor.FromFloat32("dup", [1], [1f]);
        Assert.Throws<ArgumentException>(() => ShardedCheckpoint.Write(Dir, [t, t], 100));
        Assert.That(Directory.GetFiles(Dir), Is.Empty);
    }
}
