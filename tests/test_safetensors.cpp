// The safetensors reader validates everything before reading: malformed files are errors with
// the path in the message, never crashes; the writer round-trips every dtype. Folders of files
// appear whole or not at all.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "singleinsert/core/error.h"
#include "singleinsert/core/files.h"
#include "singleinsert/core/safetensors.h"
#include "singleinsert/core/staged_directory.h"

namespace singleinsert {
namespace {

std::string temp_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "singleinsert_tests";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::string with_header(const std::string& header, const std::string& data) {
  std::string out;
  uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
  return out + header + data;
}

void expect_rejected(const std::string& name, const std::string& bytes, const std::string& fragment) {
  const std::string path = temp_path(name);
  write_file_atomic(path, bytes);
  try {
    SafetensorsFile::open(path);
    ADD_FAILURE() << name << ": accepted a malformed file";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  const std::string path = temp_path("roundtrip.safetensors");
  NamedTensors tensors = {
      {"f32", at::arange(12, at::kFloat).reshape({3, 4})},
      {"f16", at::arange(5, at::kFloat).to(at::kHalf)},
      {"bf16", at::arange(5, at::kFloat).to(at::kBFloat16)},
      {"f64", at::ones({2}, at::kDouble)},
      {"i64", at::arange(3, at::kLong)},
      {"u8", at::arange(7, at::kByte)},
      {"scalar", at::scalar_tensor(3.5)},
      {"empty", at::empty({0, 4})},
  };
  save_safetensors(path, tensors, {{"format", "pt"}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.size(), tensors.size());
  EXPECT_EQ(file.metadata().at("format"), "pt");
  for (const auto& [name, tensor] : tensors) {
    const at::Tensor loaded = file.tensor(name);
    EXPECT_EQ(loaded.scalar_type(), tensor.scalar_type()) << name;
    EXPECT_TRUE(at::equal(loaded, tensor)) << name;
  }
}

TEST(Safetensors, RejectsMalformedFiles) {
  const std::string good_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  expect_rejected("short.safetensors", "abc", "not a safetensors file");
  expect_rejected("huge_header.safetensors", with_header(good_header, std::string(8, '\0')).substr(0, 20),
                  "truncated");
  expect_rejected("bad_json.safetensors", with_header("{not json", ""), "corrupt safetensors header");
  expect_rejected("not_object.safetensors", with_header("[1,2]", ""), "not a JSON object");
  expect_rejected("truncated_data.safetensors", with_header(good_header, std::string(4, '\0')), "truncated");
  expect_rejected("wrong_size.safetensors",
                  with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
                  "needs 12 bytes");
  expect_rejected("overlap.safetensors",
                  with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              std::string(12, '\0')),
                  "overlap");
  expect_rejected("dtype.safetensors",
                  with_header(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", std::string(2, '\0')),
                  "unsupported dtype");
  expect_rejected("negative.safetensors",
                  with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0')),
                  "invalid shape");
  expect_rejected("metadata.safetensors", with_header(R"({"__metadata__":{"k":1}})", ""), "not a string");
  expect_rejected("entry.safetensors", with_header(R"({"a":{"dtype":"F32"}})", ""), "malformed header entry");
}

// The fuzzer's seed corpus and every input it ever crashed on (fuzz/regressions/safetensors/):
// each must load or fail with singleinsert::Error, never anything else. The seeds are valid files.
TEST(Safetensors, FuzzCorpusAndRegressionsLoadOrFailCleanly) {
  namespace fs = std::filesystem;
  int files = 0, valid = 0;
  for (const char* folder : {"fuzz/corpus/safetensors", "fuzz/regressions/safetensors"}) {
    const fs::path dir = fs::path(SINGLEINSERT_SOURCE_DIR) / folder;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      ++files;
      try {
        const SafetensorsFile file = SafetensorsFile::open(entry.path().string());
        for (const auto& key : file.keys()) (void)file.tensor(key);
        ++valid;
      } catch (const Error&) {
        EXPECT_NE(std::string(folder).find("regressions"), std::string::npos) << entry.path() << " is a seed";
      } catch (const std::exception& other) {
        ADD_FAILURE() << entry.path() << ": " << other.what();
      }
    }
  }
  EXPECT_GE(files, 5);
  EXPECT_GE(valid, 5);
}

TEST(Safetensors, MissingFileNamesThePath) {
  try {
    SafetensorsFile::open("/nonexistent/dir/model.safetensors");
    FAIL() << "opened a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/model.safetensors: no such file"), std::string::npos);
  }
}

TEST(Safetensors, ViewsOutliveTheFileObject) {
  const std::string path = temp_path("view.safetensors");
  save_safetensors(path, {{"x", at::arange(1000, at::kFloat)}});
  at::Tensor view;
  {
    const SafetensorsFile file = SafetensorsFile::open(path);
    view = file.view("x");
  }
  EXPECT_EQ(view[999].item<float>(), 999.0f);
}

long resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string key;
  long kib = -1;
  while (status >> key) {
    if (key == "VmRSS:") status >> kib;
    status.ignore(1 << 20, '\n');
  }
  return kib;
}

// Loading copies each tensor out of the mapping and hands its pages back, so a model's file does
// not stay resident beside the model. The bytes read back unchanged afterwards; memory that is
// not this file's is never touched.
TEST(Safetensors, ReleasedPagesLeaveTheProcessAndReadBackUnchanged) {
  const std::string path = temp_path("pages.safetensors");
  const at::Tensor values = at::arange(16 << 20, at::kFloat);  // 64 MiB
  save_safetensors(path, {{"x", values}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  const at::Tensor view = file.view("x");
  EXPECT_TRUE(at::equal(view, values));  // every page mapped in
  const long before = resident_kib();
  file.release_pages(view);
  const long after = resident_kib();
  EXPECT_GT(before - after, 60 * 1024) << "resident " << before << " KiB before, " << after << " KiB after";
  EXPECT_TRUE(at::equal(view, values));
  at::Tensor owned = values.clone();
  file.release_pages(owned);  // not a view of the file: left alone
  EXPECT_TRUE(at::equal(owned, values));
  std::remove(path.c_str());
}

TEST(StagedDirectory, AppearsWholeOrNotAtAll) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(temp_path("staged_" + std::to_string(::getpid())));
  fs::remove_all(root);
  fs::create_directories(root);
  auto write_one = [](const fs::path& staging) { write_file_atomic((staging / "x.txt").string(), "1"); };
  write_directory_atomic((root / "a").string(), write_one);
  EXPECT_EQ(read_file((root / "a" / "x.txt").string()), "1");
  try {
    write_directory_atomic((root / "a").string(), write_one);
    ADD_FAILURE() << "a folder with files was replaced";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos) << e.what();
  }
  EXPECT_THROW(write_directory_atomic((root / "b").string(),
                                      [&](const fs::path& staging) {
                                        write_one(staging);
                                        throw Error("interrupted");
                                      }),
               Error);
  fs::create_directories(root / "c");  // an empty folder is replaced
  write_directory_atomic((root / "c").string(), write_one);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"a", "c"}));  // no b, no staging folder left
}

}  // namespace
}  // namespace singleinsert
