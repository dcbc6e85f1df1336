/* test-tree.c -- being written. */
#include "testutil.h"
START_TEST(placeholder) { }
END_TEST
Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("tree");
	TCase *tc = tcase_create("build");
	tcase_add_test(tc, placeholder);
	suite_add_tcase(s, tc);
	return s;
}
