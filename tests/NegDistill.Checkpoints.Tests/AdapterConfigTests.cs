namespace NegDistill.Checkpoints.Tests;

public class AdapterConfigTests : TempDirTest
{
    // adapter_config.json as PEFT writes it (json.dumps(..., indent=2, sort_keys=True), no trailing newline),
    // including keys this library does not model.
    private const string PeftWritten =
        "{\n" +
        "  \"alpha_pattern\": {},\n" +
        "  \"auto_mapping\": null,\n" +
        "  \"base_model_name_or_path\": \"meta-llama/Llama-2-7b-hf\",\n" +
        "  \"bias\": \"none\",\n" +
        "  \"fan_in_fan_out\": false,\n" +
        "  \"inference_mode\": true,\n" +
        "  \"init_lora_weights\": true,\n" +
        "  \"layer_replication\": null,\n" +
        "  \"layers_pattern\": null,\n" +
        "  \"layers_to_transform\": [\n" +
        "    0,\n" +
        "    1\n" +
        "  ],\n" +
        "  \"loftq_config\": {},\n" +
        "  \"lora_alpha\": 16,\n" +
        "  \"lora_dropout\": 0.05,\n" +
        "  \"megatron_config\": null,\n" +
        "  \"megatron_core\": \"megatron.core\",\n" +
        "  \"modules_to_save\": null,\n" +
        "  \"peft_type\": \"LORA\",\n" +
        "  \"r\": 8,\n" +
        "  \"rank_pattern\": {},\n" +
        "  \"revision\": null,\n" +
        "  \"target_modules\": [\n" +
        "    \"v_proj\",\n" +
        "    \"q_proj\"\n" +
        "  ],\n" +
        "  \"task_type\": \"CAUSAL_LM\",\n" +
        "  \"use_dora\": false,\n" +
        "  \"use_rslora\": false\n" +
        "}";

    [Test]
    public void ReadsAPeftConfigAndWritesItBackByteForByte()
    {
        var config = AdapterConfig.FromJson(PeftWritten);
        Assert.That(config.PeftType, Is.EqualTo("LORA"));
        Assert.That(config.R, Is.EqualTo(8));
        Assert.That(config.LoraAlpha, Is.EqualTo(16));
        Assert.That(config.LoraDropout, Is.EqualTo(0.05));
        Assert.That(config.TargetModules, Is.EqualTo(new[] { "v_proj", "q_proj" }));
        Assert.That(config.Bias, Is.EqualTo("none"));
        Assert.That(config.TaskType, Is.EqualTo("CAUSAL_LM"));
        Assert.That(config.BaseModelNameOrPath, Is.EqualTo("meta-llama/Llama-2-7b-hf"));
        Assert.That(config.FanInFanOut, Is.False);
        Assert.That(config.InferenceMode, Is.True);
        Assert.That(config.ModulesToSave, Is.Null);
        Assert.That(config.Scaling, Is.EqualTo(2.0));
        Assert.That(config.Extra.Keys, Does.Contain("use_dora").And.Contain("layers_to_transform").And.Not.Contain("r"));

        Assert.That(config.ToJson(), Is.EqualTo(PeftWritten));
    }

    [Test]
    public void OwnConfigIsWrittenInPeftStyle()
    {
        var config = new AdapterConfig
        {
            R = 4,
            LoraAlpha = 8,
            TargetModules = ["q_proj", "v_proj"],
            BaseModelNameOrPath = "negdistill/tiny",
        };
        string expected =
            "{\n" +
            "  \"base_model_name_or_path\": \"negdistill/tiny\",\n" +
            "  \"bias\": \"none\",\n" +
            "  \"fan_in_fan_out\": false,\n" +
            "  \"inference_mode\": true,\n" +
            "  \"lora_alpha\": 8,\n" +
            "  \"lora_dropout\": 0.0,\n" +
            "  \"modules_to_save\": null,\n" +
            "  \"peft_type\": \"LORA\",\n" +
            "  \"r\": 4,\n" +
            "  \"target_modules\": [\n" +
            "    \"q_proj\",\n" +
            "    \"v_proj\"\n" +
            "  ],\n" +
            "  \"task_type\": \"CAUSAL_LM\",\n" +
            "  \"use_rslora\": false\n" +
            "}";
        Assert.That(config.ToJson(), Is.EqualTo(expected));
        Assert.That(AdapterConfig.FromJson(expected), Is.EqualTo(config));
    }

    [Test]
    public void SaveAndLoadRoundTripEveryField()
    {
        var config = new AdapterConfig
        {
            R = 16,
            LoraAlpha = 12.5,
            LoraDropout = 1e-5,
            TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            Bias = "lora_only",
            TaskType = null,
            BaseModelNameOrPath = null,
            FanInFanOut = true,
            InferenceMode = false,
            ModulesToSave = ["lm_head"],
            UseRslora = true,
        };
        string path = PathIn("adapter_config.json");
        config.Save(path);
        string text = File.ReadAllText(path);
        Assert.That(text, Does.Contain("\"lora_alpha\": 12.5,").And.Contain("\"lora_dropout\": 1e-05,").And.Contain("\"task_type\": null"));
        var back = AdapterConfig.Load(path);
        Assert.That(back, Is.EqualTo(config));
        Assert.That(back.Scaling, Is.EqualTo(12.5 / 4).Within(1e-12));
    }

    [Test]
    public void NullTargetModulesMeansPeftsLlamaDefault()
    {
        var config = AdapterConfig.FromJson("{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 4, \"target_modules\": null}");
        Assert.That(config.TargetModules, Is.EqualTo(new[] { "q_proj", "v_proj" }));
    }

    [TestCase("{\"peft_type\": \"IA3\", \"r\": 8, \"target_modules\": [\"q_proj\"]}", "only \"LORA\"", TestName = "Config of another PEFT method")]
    [TestCase("{\"r\": 8, \"target_modules\": [\"q_proj\"]}", "peft_type", TestName = "Config without peft_type")]
    [TestCase("{\"peft_type\": \"LORA\", \"r\": \"8\", \"target_modules\": [\"q_proj\"]}", "\"r\" must be an integer", TestName = "Rank as a string")]
    [TestCase("{\"peft_type\": \"LORA\", \"r\": 0, \"target_modules\": [\"q_proj\"]}", "r must be positive", TestName = "Zero rank")]
    [TestCase("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \".*proj\"}", "pattern", TestName = "Target modules as a pattern")]
    [TestCase("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"q_proj\", 3]}", "list of strings", TestName = "Target modules with a number")]
    [TestCase("{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"q_proj\"], \"fan_in_fan_out\": \"no\"}", "true or false", TestName = "Boolean as a string")]
    [TestCase("[1]", "JSON object", TestName = "Config that is an array")]
    public void InvalidConfigsAreRejectedNamingTheFile(string json, string reason)
    {
        string path = PathIn("adapter_config.json");
        File.WriteAllText(path, json);
        var ex = Assert.Throws<CheckpointFormatException>(() => AdapterConfig.Load(path))!;
        Assert.That(ex.Kind, Is.EqualTo(CheckpointErrorKind.InvalidConfig));
        Assert.That(ex.Message, Does.Contain(path).And.Contain(reason));
    }

    [Test]
    public void ConfigThatIsNotJsonIsRejected()
    {
        string path = PathIn("adapter_config.json");
        File.WriteAllText(path, "{\"peft_type\": ");
        var ex = Assert.Throws<CheckpointFormatException>(() => AdapterConfig.Load(path))!;
        Assert.That(ex.Kind, Is.EqualTo(CheckpointErrorKind.InvalidJson));
        Assert.That(ex.FilePath, Is.EqualTo(path));
    }

    [TestCase(0.05, "0.05")]
    [TestCase(0.0, "0.0")]
    [TestCase(-0.0, "-0.0")]
    [TestCase(0.1, "0.1")]
    [TestCase(16.0, "16.0")]
    [TestCase(-2.5, "-2.5")]
    [TestCase(1e-5, "1e-05")]
    [TestCase(1.5e-7, "1.5e-07")]
    [TestCase(0.0001, "0.0001")]
    [TestCase(123456.789, "123456.789")]
    [TestCase(1e15, "1000000000000000.0")]
    [TestCase(1e16, "1e+16")]
    [TestCase(1e22, "1e+22")]
    [TestCase(1.0 / 3.0, "0.3333333333333333")]
    [TestCase(1.7976931348623157e308, "1.7976931348623157e+308")]
    [TestCase(5e-324, "5e-324")]
    public void FloatsAreWrittenAsPythonsReprWritesThem(double value, string expected)
    {
        Assert.That(PythonJson.FloatRepr(value), Is.EqualTo(expected));
    }

    [Test]
    public void StringsAreEscapedAsPythonsEnsureAsciiEscapesThem()
    {
        Assert.That(PythonJson.Serialize("é\u0001\"\\\n\t/\u007f😀"), Is.EqualTo("\"\\u00e9\\u0001\\\"\\\\\\n\\t/\\u007f\\ud83d\\ude00\""));
    }
}
