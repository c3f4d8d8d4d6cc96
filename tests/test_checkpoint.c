/* State dicts (tensor/state.c) and safetensors checkpoints (data/safetensors.c). */
#include "common.h"

#include <stdio.h>

/* ---- state dict ------------------------------------------------------------------------- */

static void test_state_dict_basic(void **state)
{
    (void)state;
    tg_state_dict *sd = tg_state_dict_new();
    assert_non_null(sd);
    assert_int_equal(tg_state_dict_size(sd), 0);
    assert_null(tg_state_dict_get(sd, "w"));

    tg_tensor *a = tg_tensor_full(TG_DIMS(2, 3), 1.5f);
    tg_tensor *b = tg_tensor_scalar(7.0f);
    assert_int_equal(tg_state_dict_put(sd, "net.fc1.weight", a), TG_OK);
    assert_int_equal(tg_state_dict_put(sd, "net.fc1.bias", b), TG_OK);
    /* The dict holds its own references: releasing ours keeps the tensors alive. */
    tg_release(a);
    tg_release(b);
    assert_int_equal(tg_state_dict_size(sd), 2);
    assert_string_equal(tg_state_dict_name(sd, 0), "net.fc1.weight");
    assert_string_equal(tg_state_dict_name(sd, 1), "net.fc1.bias");
    assert_ptr_equal(tg_state_dict_tensor(sd, 0), a);
    assert_ptr_equal(tg_state_dict_get(sd, "net.fc1.bias"), b);
    assert_true(tg_state_dict_get(sd, "net.fc1.weight")->data[5] == 1.5f);
    assert_null(tg_state_dict_get(sd, "net.fc1"));
    assert_int_equal(tg_last_status(), TG_OK); /* a miss is not an error */

    /* Duplicates are refused and leave the dict unchanged. */
    tg_tensor *c = tg_tensor_zeros(TG_DIMS(1));
    assert_int_equal(tg_state_dict_put(sd, "net.fc1.bias", c), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_put: name \"net.fc1.bias\" is already in the state dict");
    assert_int_equal(tg_state_dict_size(sd), 2);
    assert_ptr_equal(tg_state_dict_get(sd, "net.fc1.bias"), b);
    tg_release(c);

    /* Metadata: insertion order, replacement in place. */
    assert_int_equal(tg_state_dict_meta_size(sd), 0);
    assert_int_equal(tg_state_dict_set_meta(sd, "format", "pt"), TG_OK);
    assert_int_equal(tg_state_dict_set_meta(sd, "epoch", "3"), TG_OK);
    assert_int_equal(tg_state_dict_set_meta(sd, "format", "tapegrad"), TG_OK);
    assert_int_equal(tg_state_dict_meta_size(sd), 2);
    assert_string_equal(tg_state_dict_meta_key(sd, 0), "format");
    assert_string_equal(tg_state_dict_meta_value(sd, 0), "tapegrad");
    assert_string_equal(tg_state_dict_meta(sd, "epoch"), "3");
    assert_null(tg_state_dict_meta(sd, "missing"));
    tg_state_dict_free(sd);
}

/* Enough names to grow the array and rehash the index several times. */
static void test_state_dict_many(void **state)
{
    (void)state;
    tg_state_dict *sd = tg_state_dict_new();
    tg_tensor *t = tg_tensor_zeros(TG_DIMS(1));
    char name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "layer%d.weight", i);
        assert_int_equal(tg_state_dict_put(sd, name, t), TG_OK);
    }
    assert_int_equal(t->refcount, 1001);
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "layer%d.weight", i);
        assert_string_equal(tg_state_dict_name(sd, i), name);
        assert_ptr_equal(tg_state_dict_get(sd, name), t);
        assert_int_equal(tg_state_dict_put(sd, name, t), TG_ERR_ARG);
    }
    tg_clear_error();
    tg_state_dict_free(sd);
    assert_int_equal(t->refcount, 1);
    tg_release(t);
}

static void test_state_dict_bad_args(void **state)
{
    (void)state;
    tg_state_dict *sd = tg_state_dict_new();
    tg_tensor *t = tg_tensor_zeros(TG_DIMS(2));

    assert_int_equal(tg_state_dict_put(sd, NULL, t), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_put: name is NULL");
    assert_int_equal(tg_state_dict_put(sd, "", t), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_put: name is empty");
    char long_name[1100];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(tg_state_dict_put(sd, long_name, t), TG_ERR_ARG);
    assert_error_contains("is longer than 1024 bytes");
    assert_int_equal(tg_state_dict_put(sd, "a\nb", t), TG_ERR_ARG);
    assert_error_contains("control character or invalid UTF-8 at byte 1");
    assert_int_equal(tg_state_dict_put(sd, "caf\xc3", t), TG_ERR_ARG); /* cut UTF-8 */
    assert_error_contains("invalid UTF-8 at byte 3");
    assert_int_equal(tg_state_dict_put(sd, "caf\xc3\xa9", t), TG_OK); /* valid UTF-8 */
    assert_int_equal(tg_state_dict_put(sd, "__metadata__", t), TG_ERR_ARG);
    assert_error_contains("\"__metadata__\" is reserved");
    tg_clear_error();
    assert_int_equal(tg_state_dict_put(sd, "x", NULL), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_put: tensor for \"x\" is NULL");

    /* A NULL tensor from a failed op keeps that op's message. */
    tg_clear_error();
    tg_tensor *bad = tg_tensor_zeros(TG_DIMS(-1));
    assert_null(bad);
    assert_int_equal(tg_state_dict_put(sd, "x", bad), TG_ERR_SHAPE);
    assert_error_contains("tg_tensor_zeros");

    tg_clear_error();
    assert_int_equal(tg_state_dict_put(NULL, "x", t), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_put: state dict is NULL");
    assert_null(tg_state_dict_name(sd, 1));
    assert_error_contains("tg_state_dict_name: index 1 is outside 0..0");
    assert_null(tg_state_dict_tensor(sd, -1));
    assert_error_contains("tg_state_dict_tensor: index -1 is outside 0..0");
    assert_null(tg_state_dict_meta_key(sd, 0));
    assert_error_contains("tg_state_dict_meta_key: index 0 is outside 0..-1");
    assert_int_equal(tg_state_dict_set_meta(sd, "k", NULL), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_set_meta: value for key \"k\" is NULL");
    assert_int_equal(tg_state_dict_set_meta(sd, "", "v"), TG_ERR_ARG);
    assert_error_contains("tg_state_dict_set_meta: key is empty");
    assert_int_equal(tg_state_dict_set_meta(sd, "k", "bad \xff byte"), TG_ERR_ARG);
    assert_error_contains("value for key \"k\" has invalid UTF-8 at byte 4");
    /* Values may hold any text, newlines included (they are JSON-escaped on save). */
    assert_int_equal(tg_state_dict_set_meta(sd, "k", "line 1\nline \"2\"\t\\"), TG_OK);
    assert_int_equal(tg_state_dict_size(sd), 1);
    tg_state_dict_free(sd);
    tg_state_dict_free(NULL);
    tg_release(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_state_dict_basic),
        TG_TEST(test_state_dict_many),
        TG_TEST(test_state_dict_bad_args),
    };
    return cmocka_run_group_tests_name("checkpoint", tests, NULL, NULL);
}
