/*
 * check-main.c -- the runner every unit test binary shares. The test file
 * defines img_test_suite(); CK_RUN_CASE (set by CTest) picks one case.
 */
#include <stdlib.h>
#include <check.h>

Suite *img_test_suite(void);

int main(void)
{
	SRunner *sr = srunner_create(img_test_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
