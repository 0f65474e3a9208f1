#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <errno.h>

#include "net.h"

/* Which connect errors are answered at once (the quick pace) and which wait on the curve. */
static void test_connect_refused_classification(void **state)
{
	static const struct {
		int err;
		bool refused;
	} cases[] = {
	    {-ECONNREFUSED, true}, /* nothing listens: sshd restarting */
	    {-ECONNRESET, true},
	    {-EHOSTUNREACH, true}, /* ICMP, or no route: nothing waited for */
	    {-ENETUNREACH, true},
	    {-ENETDOWN, true},
	    {-ETIMEDOUT, false}, /* the kernel gave up on its SYNs: the curve */
	    {-EMFILE, false},	 /* local shortages are not the server's answer */
	    {-ENFILE, false},
	    {-EADDRNOTAVAIL, false}, /* out of local ports */
	    {-ENOBUFS, false},
	    {-EACCES, false}, /* a local firewall rule */
	    {-EPERM, false},
	    {0, false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (net_connect_refused(cases[i].err) != cases[i].refused)
			fail_msg("errno %d: expected %s", -cases[i].err,
				 cases[i].refused ? "refused" : "not refused");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_connect_refused_classification),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
